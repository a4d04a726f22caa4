//! Scenario files: the TOML shape, its validation, and the validated model.
//!
//! A scenario says what the world looks like (backends, their speed over
//! time, failures, caches), what traffic arrives (process, rate, service
//! times, keys) and how proxies see it (how many, timeout, load reports).
//! It says nothing about the algorithm: the same scenario runs once per
//! [`Algorithm`](fulcrum_balance::Algorithm). The keys are documented in
//! `docs/simulator.md`; unknown keys are refused so a typo cannot silently
//! change an experiment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fulcrum_balance::selector::{GeoPoint, Location};
use fulcrum_balance::{Nanos, SelectorConfig, SECOND};
use serde::Deserialize;

use crate::dist::{fnv1a, mix64, KeyDist, ServiceDist};
use crate::duration::Duration;

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The scenario file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse or had unknown keys.
    #[error("scenario {path}: {message}")]
    Parse {
        /// The scenario file.
        path: PathBuf,
        /// What was wrong, with the key.
        message: String,
    },
    /// The TOML parsed but describes something impossible.
    #[error("scenario {path}: {key}: {message}")]
    Invalid {
        /// The scenario file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What to write instead.
        message: String,
    },
}

// ---------------------------------------------------------------- file shapes

/// The top level of a scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileScenario {
    name: Option<String>,
    description: Option<String>,
    duration: Duration,
    #[serde(default)]
    warmup: Duration,
    timeout: Option<Duration>,
    #[serde(default = "one")]
    proxies: usize,
    seeds: Option<u64>,
    #[serde(default)]
    algorithms: Vec<String>,
    decay: Option<Duration>,
    slow_start: Option<Duration>,
    sample_interval: Option<Duration>,
    arrivals: FileArrivals,
    service: FileService,
    keys: Option<FileKeys>,
    reports: Option<FileReports>,
    geo_max_in_flight: Option<u32>,
    #[serde(default)]
    clients: Vec<FileClient>,
    backends: Vec<FileBackendGroup>,
}

/// One source of clients placed on the map (`[[clients]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClient {
    name: String,
    lat: f64,
    lon: f64,
    #[serde(default = "unit_speed")]
    share: f64,
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileArrivals {
    process: String,
    rate: Option<f64>,
    load: Option<f64>,
    capacity: Option<f64>,
    burst_rate: Option<f64>,
    burst_load: Option<f64>,
    period: Option<Duration>,
    burst: Option<Duration>,
    from_rate: Option<f64>,
    from_load: Option<f64>,
    to_rate: Option<f64>,
    to_load: Option<f64>,
    rates: Option<Vec<f64>>,
    loads: Option<Vec<f64>>,
    step: Option<Duration>,
    file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileService {
    distribution: String,
    mean: Option<Duration>,
    cv: Option<f64>,
    short: Option<Duration>,
    long: Option<Duration>,
    p_long: Option<f64>,
    alpha: Option<f64>,
    min: Option<Duration>,
    max: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    distribution: String,
    count: u64,
    exponent: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileReports {
    interval: Duration,
    #[serde(default)]
    lag: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBackendGroup {
    name: String,
    #[serde(default = "one_u32")]
    count: u32,
    #[serde(default = "one_u32")]
    weight: u32,
    #[serde(default = "one_u32")]
    workers: u32,
    #[serde(default = "fcfs")]
    discipline: String,
    #[serde(default = "unit_speed")]
    speed: f64,
    join_at: Option<Duration>,
    leave_at: Option<Duration>,
    #[serde(default)]
    speed_changes: Vec<FileSpeedChange>,
    antagonist: Option<FileAntagonist>,
    #[serde(default)]
    stalls: Vec<FileStall>,
    #[serde(default)]
    failures: Vec<FileFailure>,
    cache: Option<FileCache>,
    zone: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
}

fn one_u32() -> u32 {
    1
}
fn fcfs() -> String {
    "fcfs".to_owned()
}
fn unit_speed() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpeedChange {
    at: Duration,
    speed: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAntagonist {
    loss: [f64; 2],
    busy: Duration,
    idle: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStall {
    from: Duration,
    until: Option<Duration>,
    factor: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFailure {
    mode: String,
    from: Duration,
    until: Option<Duration>,
    latency: Option<Duration>,
    detect: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    capacity: usize,
    miss_factor: f64,
}

// ---------------------------------------------------------------- the model

/// A validated scenario, ready to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name shown in reports (the `name` key, else the file stem).
    pub name: String,
    /// Free text from the `description` key.
    pub description: Option<String>,
    /// Arrivals stop at this time.
    pub duration: Nanos,
    /// Requests arriving before this are served but not measured.
    pub warmup: Nanos,
    /// A request not answered within this is counted as timed out.
    pub timeout: Option<Nanos>,
    /// Number of independent proxies, each with its own view.
    pub proxies: usize,
    /// Default number of seeds per algorithm.
    pub seeds: u64,
    /// Default algorithms (configuration names); empty means all.
    pub algorithms: Vec<String>,
    /// Selector tunables handed to `Algorithm::build`.
    pub selector: SelectorConfig,
    /// Slow-start window for joining backends (0 = off).
    pub slow_start: Nanos,
    /// How often in-flight and queue lengths are sampled for metrics.
    pub sample_interval: Nanos,
    /// The arrival process.
    pub arrivals: Arrivals,
    /// Service-time distribution (work at speed 1).
    pub service: ServiceDist,
    /// Request keys, when the scenario has any.
    pub keys: Option<Arc<KeyDist>>,
    /// Backend load reports, when enabled.
    pub reports: Option<Reports>,
    /// Backend groups, in order; backend ids follow this order.
    pub groups: Vec<BackendGroup>,
    /// Where requests come from (`[[clients]]`); empty = nowhere in
    /// particular (`PickContext.client` stays `None`).
    pub clients: Vec<ClientSource>,
}

/// A source of requests at a point on the map.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSource {
    /// Shown in reports.
    pub name: String,
    /// Where its requests come from (handed to `PickContext.client`).
    pub point: GeoPoint,
    /// Relative share of the arrivals (normalised over all sources).
    pub share: f64,
}

/// How requests arrive.
#[derive(Clone, Debug)]
pub enum Arrivals {
    /// A (possibly time-varying) Poisson process.
    Poisson(RateProfile),
    /// Replay of recorded requests.
    Trace(Arc<Vec<TraceRecord>>),
}

/// Arrival rate over time, in requests per second.
#[derive(Clone, Debug, PartialEq)]
pub enum RateProfile {
    /// A constant rate.
    Constant(f64),
    /// `base` most of the time, `burst` for the first `burst` of every `period`.
    OnOff {
        /// Rate outside bursts.
        base: f64,
        /// Rate during bursts.
        burst_rate: f64,
        /// Length of one cycle.
        period: Nanos,
        /// Length of the burst at the start of each cycle.
        burst: Nanos,
    },
    /// Linear from `from` at t = 0 to `to` at the end of the run.
    Ramp {
        /// Initial rate.
        from: f64,
        /// Final rate.
        to: f64,
        /// Time over which the rate moves.
        over: Nanos,
    },
    /// One rate per `step`; the last one holds after the list ends.
    Steps {
        /// Rates in order.
        rates: Vec<f64>,
        /// Length of each step.
        step: Nanos,
    },
}

impl RateProfile {
    /// The rate (requests per second) at time `t`.
    pub fn rate_at(&self, t: Nanos) -> f64 {
        match self {
            RateProfile::Constant(r) => *r,
            RateProfile::OnOff {
                base,
                burst_rate,
                period,
                burst,
            } => {
                if t % period < *burst {
                    *burst_rate
                } else {
                    *base
                }
            }
            RateProfile::Ramp { from, to, over } => {
                let f = (t as f64 / (*over).max(1) as f64).min(1.0);
                from + (to - from) * f
            }
            RateProfile::Steps { rates, step } => {
                let i = (t / (*step).max(1)) as usize;
                rates[i.min(rates.len() - 1)]
            }
        }
    }

    /// An upper bound of [`rate_at`](Self::rate_at) (for thinning).
    pub fn max_rate(&self) -> f64 {
        match self {
            RateProfile::Constant(r) => *r,
            RateProfile::OnOff {
                base, burst_rate, ..
            } => base.max(*burst_rate),
            RateProfile::Ramp { from, to, .. } => from.max(*to),
            RateProfile::Steps { rates, .. } => rates.iter().copied().fold(0.0, f64::max),
        }
    }
}

/// One recorded request.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRecord {
    /// Arrival time.
    pub at: Nanos,
    /// Hash of the request key, if the trace had one.
    pub key: Option<u64>,
    /// Work at speed 1 in nanoseconds, if the trace had it (else drawn).
    pub service: Option<f64>,
}

/// Backend load reports (ORCA-style): each backend's true utilisation,
/// sampled every `interval` and delivered to every proxy `lag` later.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reports {
    /// Sampling period.
    pub interval: Nanos,
    /// Delivery delay.
    pub lag: Nanos,
}

/// How a server orders the requests it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discipline {
    /// `workers` serve in arrival order; the rest wait.
    Fcfs,
    /// All requests share `workers` of capacity equally (threaded servers).
    ProcessorSharing,
    /// Every request is served at once: latency is its service time
    /// (I/O-bound servers whose concurrency never binds).
    Delay,
}

/// A Markov-modulated antagonist: busy and idle periods with exponential
/// lengths; while busy the backend loses a fraction of its speed drawn
/// uniformly from `loss` at the start of each busy period.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Antagonist {
    /// Range of the speed fraction lost while busy.
    pub loss: [f64; 2],
    /// Mean busy period.
    pub busy: Nanos,
    /// Mean idle period.
    pub idle: Nanos,
}

/// Requests reaching the backend inside `[from, until)` take `factor` × longer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stall {
    /// Start of the window.
    pub from: Nanos,
    /// End of the window (`Nanos::MAX` = forever).
    pub until: Nanos,
    /// Latency multiplier (K).
    pub factor: f64,
}

/// What a failed backend does with requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureMode {
    /// Answers an error after `latency` without queueing (the sinkhole).
    FailFast,
    /// Never answers; only the proxy's timeout ends the request.
    BlackHole,
}

/// A failure window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Failure {
    /// Behaviour during the window.
    pub mode: FailureMode,
    /// Start of the window.
    pub from: Nanos,
    /// End of the window (`Nanos::MAX` = forever).
    pub until: Nanos,
    /// Time to answer an error (fail-fast).
    pub latency: Nanos,
    /// When set, health checking marks the backend down this long after the
    /// window starts and up again this long after it ends.
    pub detect: Option<Nanos>,
}

/// An LRU cache of keys on each backend of a group: a miss costs
/// `miss_factor` × the drawn service time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cache {
    /// Keys held.
    pub capacity: usize,
    /// Service-time multiplier on a miss.
    pub miss_factor: f64,
}

/// `count` identical backends.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendGroup {
    /// Group name; backends are named `<name>-<i>`.
    pub name: String,
    /// Number of backends.
    pub count: u32,
    /// Weight given to the selectors.
    pub weight: u32,
    /// Concurrent workers (ignored for [`Discipline::Delay`]).
    pub workers: u32,
    /// Queueing discipline.
    pub discipline: Discipline,
    /// Initial capacity multiplier (2.0 = twice as fast).
    pub speed: f64,
    /// When the group joins the cluster (None = from the start).
    pub join_at: Option<Nanos>,
    /// When the group leaves the cluster.
    pub leave_at: Option<Nanos>,
    /// Speed steps `(at, speed)`.
    pub speed_changes: Vec<(Nanos, f64)>,
    /// Markov-modulated capacity loss.
    pub antagonist: Option<Antagonist>,
    /// Latency-multiplier windows.
    pub stalls: Vec<Stall>,
    /// Failure windows.
    pub failures: Vec<Failure>,
    /// Per-backend cache.
    pub cache: Option<Cache>,
    /// Zone and coordinates given to the selectors (`zone`, `lat`, `lon`).
    pub location: Option<Location>,
}

impl Scenario {
    /// Loads and validates a scenario file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ScenarioError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates scenario text; `path` names it in errors and
    /// anchors relative trace files.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let file: FileScenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Validator { path }.scenario(file)
    }

    /// Total number of backends across groups.
    pub fn backend_count(&self) -> usize {
        self.groups.iter().map(|g| g.count as usize).sum()
    }

    /// Requests per second the initial cluster serves at full utilisation,
    /// ignoring antagonists, stalls and failures; `None` when a group uses
    /// the delay discipline (unbounded).
    pub fn nominal_capacity(&self) -> Option<f64> {
        nominal_capacity(&self.groups, self.service.mean())
    }
}

fn nominal_capacity(groups: &[BackendGroup], mean_service: f64) -> Option<f64> {
    let mut total = 0.0;
    for g in groups.iter().filter(|g| g.join_at.is_none()) {
        if g.discipline == Discipline::Delay {
            return None;
        }
        total += g.count as f64 * g.workers as f64 * g.speed;
    }
    Some(total * SECOND as f64 / mean_service)
}

struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            path: self.path.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn scenario(&self, f: FileScenario) -> Result<Scenario, ScenarioError> {
        let name = f.name.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".to_owned())
        });
        if f.duration.0 == 0 {
            return Err(self.invalid("duration", "must be positive, e.g. `30s`"));
        }
        if f.warmup.0 >= f.duration.0 {
            return Err(self.invalid("warmup", "must be shorter than `duration`"));
        }
        if f.proxies == 0 {
            return Err(self.invalid("proxies", "must be at least 1"));
        }
        if f.seeds == Some(0) {
            return Err(self.invalid("seeds", "must be at least 1"));
        }
        if f.backends.is_empty() {
            return Err(self.invalid("backends", "add at least one [[backends]] group"));
        }
        let service = self.service(&f.service)?;
        let mut groups = Vec::with_capacity(f.backends.len());
        for (i, g) in f.backends.iter().enumerate() {
            groups.push(self.group(i, g)?);
        }
        if groups.iter().all(|g| g.join_at.is_some()) {
            return Err(self.invalid("backends", "at least one group must be present from t = 0"));
        }
        let capacity = match f.arrivals.capacity {
            Some(c) if c > 0.0 => Some(c),
            Some(_) => return Err(self.invalid("arrivals.capacity", "must be positive")),
            None => nominal_capacity(&groups, service.mean()),
        };
        let arrivals = self.arrivals(&f.arrivals, capacity, f.duration.0)?;
        let has_black_hole = groups
            .iter()
            .flat_map(|g| &g.failures)
            .any(|x| x.mode == FailureMode::BlackHole);
        if has_black_hole && f.timeout.is_none() {
            return Err(self.invalid(
                "timeout",
                "a black-hole failure needs a timeout, or its requests never end",
            ));
        }
        let keys = match &f.keys {
            None => None,
            Some(k) => Some(Arc::new(self.keys(k)?)),
        };
        if let Some(t) = f.timeout {
            if t.0 == 0 {
                return Err(self.invalid("timeout", "must be positive"));
            }
        }
        let reports = match &f.reports {
            None => None,
            Some(r) if r.interval.0 == 0 => {
                return Err(self.invalid("reports.interval", "must be positive"))
            }
            Some(r) => Some(Reports {
                interval: r.interval.0,
                lag: r.lag.0,
            }),
        };
        // Field-by-field so that tunables added to SelectorConfig later keep
        // their defaults here.
        #[allow(clippy::needless_update)]
        let selector = SelectorConfig {
            decay: f.decay.map_or(SelectorConfig::default().decay, |d| d.0),
            geo_max_in_flight: f
                .geo_max_in_flight
                .unwrap_or(SelectorConfig::default().geo_max_in_flight),
            ..SelectorConfig::default()
        };
        let sample_interval = f
            .sample_interval
            .map_or(10 * fulcrum_balance::MILLISECOND, |d| d.0);
        if sample_interval == 0 {
            return Err(self.invalid("sample_interval", "must be positive"));
        }
        if f.geo_max_in_flight == Some(0) {
            return Err(self.invalid("geo_max_in_flight", "must be at least 1"));
        }
        let mut clients = Vec::new();
        for (i, c) in f.clients.iter().enumerate() {
            let Some(point) = GeoPoint::new(c.lat, c.lon) else {
                return Err(self.invalid(
                    &format!("clients[{i}]"),
                    "needs -90 <= lat <= 90 and -180 <= lon <= 180",
                ));
            };
            if !(c.share.is_finite() && c.share > 0.0) {
                return Err(self.invalid(&format!("clients[{i}].share"), "must be positive"));
            }
            clients.push(ClientSource {
                name: c.name.clone(),
                point,
                share: c.share,
            });
        }
        Ok(Scenario {
            name,
            description: f.description,
            duration: f.duration.0,
            warmup: f.warmup.0,
            timeout: f.timeout.map(|t| t.0),
            proxies: f.proxies,
            seeds: f.seeds.unwrap_or(5),
            algorithms: f.algorithms,
            selector,
            slow_start: f.slow_start.map_or(0, |d| d.0),
            sample_interval,
            arrivals,
            service,
            keys,
            reports,
            groups,
            clients,
        })
    }

    fn service(&self, s: &FileService) -> Result<ServiceDist, ScenarioError> {
        let need = |v: Option<Duration>, key: &str| {
            v.map(|d| d.0 as f64)
                .filter(|&x| x > 0.0)
                .ok_or_else(|| self.invalid(&format!("service.{key}"), "required and positive"))
        };
        let dist = match s.distribution.as_str() {
            "constant" => ServiceDist::Constant {
                value: need(s.mean, "mean")?,
            },
            "exponential" => ServiceDist::Exponential {
                mean: need(s.mean, "mean")?,
            },
            "lognormal" => ServiceDist::Lognormal {
                mean: need(s.mean, "mean")?,
                cv: s
                    .cv
                    .filter(|&c| c > 0.0)
                    .ok_or_else(|| self.invalid("service.cv", "lognormal needs cv > 0"))?,
            },
            "bimodal" => {
                let p_long = s.p_long.unwrap_or(-1.0);
                if !(0.0..=1.0).contains(&p_long) {
                    return Err(self.invalid("service.p_long", "bimodal needs 0 <= p_long <= 1"));
                }
                ServiceDist::Bimodal {
                    short: need(s.short, "short")?,
                    long: need(s.long, "long")?,
                    p_long,
                }
            }
            "pareto" => {
                let alpha = s
                    .alpha
                    .filter(|&a| a > 0.0)
                    .ok_or_else(|| self.invalid("service.alpha", "pareto needs alpha > 0"))?;
                let (min, max) = (need(s.min, "min")?, need(s.max, "max")?);
                if max <= min {
                    return Err(self.invalid("service.max", "must exceed service.min"));
                }
                ServiceDist::BoundedPareto { alpha, min, max }
            }
            other => {
                return Err(self.invalid(
                    "service.distribution",
                    format!(
                        "unknown `{other}`, expected constant, exponential, lognormal, bimodal or pareto"
                    ),
                ))
            }
        };
        Ok(dist)
    }

    fn keys(&self, k: &FileKeys) -> Result<KeyDist, ScenarioError> {
        if k.count == 0 {
            return Err(self.invalid("keys.count", "must be at least 1"));
        }
        match k.distribution.as_str() {
            "uniform" => Ok(KeyDist::Uniform { count: k.count }),
            "zipf" => {
                let s = k
                    .exponent
                    .filter(|&s| s > 0.0)
                    .ok_or_else(|| self.invalid("keys.exponent", "zipf needs exponent > 0"))?;
                if k.count > 50_000_000 {
                    return Err(self.invalid("keys.count", "at most 50000000 for zipf"));
                }
                Ok(KeyDist::zipf(k.count, s))
            }
            other => Err(self.invalid(
                "keys.distribution",
                format!("unknown `{other}`, expected uniform or zipf"),
            )),
        }
    }

    /// Resolves a rate given either in requests per second or as a fraction
    /// of capacity.
    fn rate(
        &self,
        rate: Option<f64>,
        load: Option<f64>,
        capacity: Option<f64>,
        keys: (&str, &str),
    ) -> Result<f64, ScenarioError> {
        let value = match (rate, load) {
            (Some(r), None) => r,
            (None, Some(l)) => {
                let c = capacity.ok_or_else(|| {
                    self.invalid(
                        &format!("arrivals.{}", keys.1),
                        "a load needs a finite capacity: set arrivals.capacity (requests per second) when a group uses discipline = \"delay\"",
                    )
                })?;
                l * c
            }
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    &format!("arrivals.{}", keys.0),
                    format!("give `{}` or `{}`, not both", keys.0, keys.1),
                ))
            }
            (None, None) => {
                return Err(self.invalid(
                    &format!("arrivals.{}", keys.0),
                    format!("required (or `{}`, a fraction of capacity)", keys.1),
                ))
            }
        };
        if !(value.is_finite() && value >= 0.0) {
            return Err(self.invalid(&format!("arrivals.{}", keys.0), "must be >= 0"));
        }
        Ok(value)
    }

    fn arrivals(
        &self,
        a: &FileArrivals,
        capacity: Option<f64>,
        duration: Nanos,
    ) -> Result<Arrivals, ScenarioError> {
        let profile = match a.process.as_str() {
            "poisson" => {
                RateProfile::Constant(self.rate(a.rate, a.load, capacity, ("rate", "load"))?)
            }
            "bursty" => {
                let period = a.period.filter(|p| p.0 > 0).ok_or_else(|| {
                    self.invalid("arrivals.period", "bursty needs a positive period")
                })?;
                let burst = a.burst.filter(|b| b.0 <= period.0).ok_or_else(|| {
                    self.invalid("arrivals.burst", "bursty needs burst <= period")
                })?;
                RateProfile::OnOff {
                    base: self.rate(a.rate, a.load, capacity, ("rate", "load"))?,
                    burst_rate: self.rate(
                        a.burst_rate,
                        a.burst_load,
                        capacity,
                        ("burst_rate", "burst_load"),
                    )?,
                    period: period.0,
                    burst: burst.0,
                }
            }
            "ramp" => RateProfile::Ramp {
                from: self.rate(
                    a.from_rate,
                    a.from_load,
                    capacity,
                    ("from_rate", "from_load"),
                )?,
                to: self.rate(a.to_rate, a.to_load, capacity, ("to_rate", "to_load"))?,
                over: duration,
            },
            "steps" => {
                let step = a
                    .step
                    .filter(|s| s.0 > 0)
                    .ok_or_else(|| self.invalid("arrivals.step", "steps needs a positive step"))?;
                let rates = match (&a.rates, &a.loads) {
                    (Some(r), None) => r.clone(),
                    (None, Some(l)) => {
                        let c = capacity.ok_or_else(|| {
                            self.invalid(
                                "arrivals.loads",
                                "loads need a finite capacity: set arrivals.capacity",
                            )
                        })?;
                        l.iter().map(|x| x * c).collect()
                    }
                    _ => {
                        return Err(self.invalid(
                            "arrivals.rates",
                            "steps needs exactly one of `rates` or `loads`",
                        ))
                    }
                };
                if rates.is_empty() || rates.iter().any(|r| !(r.is_finite() && *r >= 0.0)) {
                    return Err(self.invalid("arrivals.rates", "needs at least one rate, all >= 0"));
                }
                RateProfile::Steps {
                    rates,
                    step: step.0,
                }
            }
            "trace" => {
                let file = a
                    .file
                    .as_ref()
                    .ok_or_else(|| self.invalid("arrivals.file", "trace needs a CSV file"))?;
                let full = match self.path.parent() {
                    Some(dir) if file.is_relative() => dir.join(file),
                    _ => file.clone(),
                };
                return Ok(Arrivals::Trace(Arc::new(self.trace(&full)?)));
            }
            other => {
                return Err(self.invalid(
                    "arrivals.process",
                    format!("unknown `{other}`, expected poisson, bursty, ramp, steps or trace"),
                ))
            }
        };
        Ok(Arrivals::Poisson(profile))
    }

    fn trace(&self, file: &Path) -> Result<Vec<TraceRecord>, ScenarioError> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            self.invalid(
                "arrivals.file",
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        parse_trace(&text)
            .map_err(|m| self.invalid("arrivals.file", format!("{}: {m}", file.display())))
    }

    fn group(&self, i: usize, g: &FileBackendGroup) -> Result<BackendGroup, ScenarioError> {
        let key = |k: &str| format!("backends[{i}].{k}");
        let discipline = match g.discipline.as_str() {
            "fcfs" => Discipline::Fcfs,
            "ps" => Discipline::ProcessorSharing,
            "delay" => Discipline::Delay,
            other => {
                return Err(self.invalid(
                    &key("discipline"),
                    format!("unknown `{other}`, expected fcfs, ps or delay"),
                ))
            }
        };
        if g.count == 0 {
            return Err(self.invalid(&key("count"), "must be at least 1"));
        }
        if g.workers == 0 {
            return Err(self.invalid(
                &key("workers"),
                "must be at least 1 (use discipline = \"delay\" for unbounded)",
            ));
        }
        if !(g.speed.is_finite() && g.speed > 0.0) {
            return Err(self.invalid(&key("speed"), "must be positive"));
        }
        let mut speed_changes = Vec::new();
        for c in &g.speed_changes {
            if !(c.speed.is_finite() && c.speed >= 0.0) {
                return Err(self.invalid(&key("speed_changes.speed"), "must be >= 0"));
            }
            speed_changes.push((c.at.0, c.speed));
        }
        let antagonist = match &g.antagonist {
            None => None,
            Some(a) => {
                let [lo, hi] = a.loss;
                if !(0.0..1.0).contains(&lo) || !(lo..1.0).contains(&hi) {
                    return Err(self.invalid(&key("antagonist.loss"), "needs 0 <= low <= high < 1"));
                }
                if a.busy.0 == 0 || a.idle.0 == 0 {
                    return Err(self.invalid(&key("antagonist"), "busy and idle must be positive"));
                }
                Some(Antagonist {
                    loss: a.loss,
                    busy: a.busy.0,
                    idle: a.idle.0,
                })
            }
        };
        let mut stalls = Vec::new();
        for s in &g.stalls {
            if !(s.factor.is_finite() && s.factor > 0.0) {
                return Err(self.invalid(&key("stalls.factor"), "must be positive"));
            }
            stalls.push(Stall {
                from: s.from.0,
                until: s.until.map_or(Nanos::MAX, |d| d.0),
                factor: s.factor,
            });
        }
        let mut failures = Vec::new();
        for f in &g.failures {
            let mode = match f.mode.as_str() {
                "fail-fast" => FailureMode::FailFast,
                "black-hole" => FailureMode::BlackHole,
                other => {
                    return Err(self.invalid(
                        &key("failures.mode"),
                        format!("unknown `{other}`, expected fail-fast or black-hole"),
                    ))
                }
            };
            failures.push(Failure {
                mode,
                from: f.from.0,
                until: f.until.map_or(Nanos::MAX, |d| d.0),
                latency: f.latency.map_or(100_000, |d| d.0),
                detect: f.detect.map(|d| d.0),
            });
        }
        let cache = match &g.cache {
            None => None,
            Some(c) if c.capacity == 0 || c.miss_factor.is_nan() || c.miss_factor < 1.0 => {
                return Err(self.invalid(&key("cache"), "needs capacity >= 1 and miss_factor >= 1"))
            }
            Some(c) => Some(Cache {
                capacity: c.capacity,
                miss_factor: c.miss_factor,
            }),
        };
        if let (Some(j), Some(l)) = (g.join_at, g.leave_at) {
            if l <= j {
                return Err(self.invalid(&key("leave_at"), "must be after join_at"));
            }
        }
        let point = match (g.lat, g.lon) {
            (None, None) => None,
            (Some(lat), Some(lon)) => Some(GeoPoint::new(lat, lon).ok_or_else(|| {
                self.invalid(&key("lat"), "needs -90 <= lat <= 90 and -180 <= lon <= 180")
            })?),
            _ => return Err(self.invalid(&key("lat"), "give both lat and lon, or neither")),
        };
        let location = (g.zone.is_some() || point.is_some()).then(|| Location {
            zone: g.zone.as_deref().map(Arc::from),
            region: None,
            point,
        });
        Ok(BackendGroup {
            name: g.name.clone(),
            count: g.count,
            weight: g.weight,
            workers: g.workers,
            discipline,
            speed: g.speed,
            join_at: g.join_at.map(|d| d.0),
            leave_at: g.leave_at.map(|d| d.0),
            speed_changes,
            antagonist,
            stalls,
            failures,
            cache,
            location,
        })
    }
}

/// Parses a trace: one request per line, `time_ms,key,service_ms`.
///
/// `time_ms` is the arrival time in (fractional) milliseconds from the start;
/// `key` is an integer or any text (hashed), or empty; `service_ms` is the
/// work in milliseconds, or empty to draw it from `[service]`. A first line
/// whose time is not a number is a header and skipped; `#` starts a comment.
pub fn parse_trace(text: &str) -> Result<Vec<TraceRecord>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split(',').map(str::trim);
        let time = fields.next().unwrap_or("");
        let at: f64 = match time.parse() {
            Ok(t) => t,
            Err(_) if out.is_empty() && n == 0 => continue,
            Err(_) => return Err(format!("line {}: `{time}` is not a time in ms", n + 1)),
        };
        if !(at.is_finite() && at >= 0.0) {
            return Err(format!("line {}: time must be >= 0", n + 1));
        }
        let key = match fields.next() {
            None | Some("") => None,
            Some(k) => Some(
                k.parse::<u64>()
                    .map(mix64)
                    .unwrap_or_else(|_| fnv1a(k.as_bytes())),
            ),
        };
        let service = match fields.next() {
            None | Some("") => None,
            Some(s) => {
                let ms: f64 = s
                    .parse()
                    .map_err(|_| format!("line {}: `{s}` is not a service time in ms", n + 1))?;
                if !(ms.is_finite() && ms >= 0.0) {
                    return Err(format!("line {}: service time must be >= 0", n + 1));
                }
                Some(ms * 1e6)
            }
        };
        out.push(TraceRecord {
            at: (at * 1e6).round() as Nanos,
            key,
            service,
        });
    }
    out.sort_by_key(|r| r.at);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        duration = "10s"
        [arrivals]
        process = "poisson"
        load = 0.5
        [service]
        distribution = "exponential"
        mean = "1ms"
        [[backends]]
        name = "b"
        count = 4
    "#;

    #[test]
    fn scenario_resolves_load_against_nominal_capacity() {
        let s = Scenario::from_toml(MINIMAL, Path::new("x/min.toml")).unwrap();
        assert_eq!(s.name, "min");
        assert_eq!(s.nominal_capacity(), Some(4000.0));
        match s.arrivals {
            Arrivals::Poisson(RateProfile::Constant(r)) => assert!((r - 2000.0).abs() < 1e-9),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scenario_refuses_unknown_keys_and_names_them() {
        let text = MINIMAL.replace("count = 4", "count = 4\nsped = 2.0");
        let err = Scenario::from_toml(&text, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sped"), "{err}");
    }

    #[test]
    fn scenario_requires_capacity_for_loads_on_delay_servers() {
        let text = MINIMAL.replace("count = 4", "count = 4\ndiscipline = \"delay\"");
        let err = Scenario::from_toml(&text, Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("arrivals.capacity"), "{err}");
    }

    #[test]
    fn trace_parses_header_keys_and_optional_service() {
        let t = parse_trace("time_ms,key,service_ms\n2.5,42,1.0\n1,user-7,\n3\n").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].at, 1_000_000);
        assert_eq!(t[0].service, None);
        assert_eq!(t[1].key, Some(mix64(42)));
        assert_eq!(t[1].service, Some(1e6));
        assert_eq!(t[2].key, None);
        assert!(parse_trace("1\nx\n").is_err());
    }

    #[test]
    fn rate_profiles_follow_their_shape() {
        let ramp = RateProfile::Ramp {
            from: 100.0,
            to: 300.0,
            over: 10,
        };
        assert_eq!(ramp.rate_at(5), 200.0);
        assert_eq!(ramp.max_rate(), 300.0);
        let steps = RateProfile::Steps {
            rates: vec![1.0, 3.0, 2.0],
            step: 10,
        };
        assert_eq!(steps.rate_at(15), 3.0);
        assert_eq!(steps.rate_at(1000), 2.0);
        let onoff = RateProfile::OnOff {
            base: 1.0,
            burst_rate: 5.0,
            period: 10,
            burst: 2,
        };
        assert_eq!(onoff.rate_at(21), 5.0);
        assert_eq!(onoff.rate_at(25), 1.0);
    }
}
