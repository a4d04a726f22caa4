//! Backends and the immutable [`BackendSet`] snapshot selectors work on.
//!
//! A [`Backend`] pairs configuration (address, weight, admin state) with a
//! shared [`BackendState`] holding everything learned at run time (load,
//! probe health, slow-start clock). The state is reference counted and keyed
//! by address by whoever builds the snapshots, so a reload or a membership
//! change keeps what the balancer has learned.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::health::Health;
use crate::load::Load;
use crate::selector::Location;
use crate::Nanos;

/// Index of a backend inside one [`BackendSet`] snapshot.
///
/// It is only meaningful together with the snapshot it came from; identity
/// across snapshots is the backend's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u32);

impl BackendId {
    /// The position in [`BackendSet::backends`].
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What the operator wants for a backend, independent of its probe health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AdminState {
    /// Takes new requests when healthy.
    #[default]
    Enabled,
    /// Takes no new requests; requests in flight finish.
    Draining,
    /// Takes nothing.
    Disabled,
}

impl AdminState {
    /// The configuration and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Enabled => "enabled",
            AdminState::Draining => "draining",
            AdminState::Disabled => "disabled",
        }
    }

    /// Parses the configuration spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enabled" => Some(AdminState::Enabled),
            "draining" => Some(AdminState::Draining),
            "disabled" => Some(AdminState::Disabled),
            _ => None,
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Run-time state of one backend, shared by every snapshot that contains it.
#[derive(Debug)]
pub struct BackendState {
    /// Live load signals (shared so an [`InFlightGuard`](crate::InFlightGuard)
    /// can outlive the snapshot: `state.load.start()`).
    pub load: Arc<Load>,
    /// The health state machine (active probes, passive outlier detection)
    /// whose verdict drives the healthy bit; see [`crate::health`].
    pub health: Health,
    healthy: AtomicBool,
    /// Start of the slow-start window ([`Nanos`]); 0 means "no ramp".
    ramp_since: AtomicU64,
}

impl Default for BackendState {
    fn default() -> Self {
        Self::new()
    }
}

impl BackendState {
    /// A healthy backend with no history.
    pub fn new() -> Self {
        Self {
            load: Arc::new(Load::new()),
            health: Health::new(),
            healthy: AtomicBool::new(true),
            ramp_since: AtomicU64::new(0),
        }
    }

    /// Whether health checking currently considers the backend usable.
    #[inline]
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records the verdict of health checking.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Starts (or restarts) the slow-start ramp at `now`.
    pub fn start_ramp(&self, now: Nanos) {
        // 0 is reserved for "no ramp"; a ramp starting at the epoch is harmless to shift.
        self.ramp_since.store(now.max(1), Ordering::Relaxed);
    }

    /// When the current slow-start ramp began, if one did.
    pub fn ramp_since(&self) -> Option<Nanos> {
        match self.ramp_since.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
}

/// The panic-mode flag of one snapshot and the threshold it is computed with.
#[derive(Debug, Default)]
pub(crate) struct PanicFlag {
    pub(crate) threshold: u32,
    pub(crate) active: AtomicBool,
}

impl PanicFlag {
    fn new(threshold: u32) -> Self {
        Self {
            threshold,
            active: AtomicBool::new(false),
        }
    }
}

/// One upstream address with its weight and admin state.
#[derive(Clone, Debug)]
pub struct Backend {
    /// `host:port`; the backend's identity.
    pub address: String,
    /// Relative share of traffic; 0 takes none.
    pub weight: u32,
    /// Operator intent.
    pub admin: AdminState,
    /// Learned state, shared across snapshots.
    pub state: Arc<BackendState>,
    /// Zone, region and coordinates, for the `geo` selector.
    pub location: Option<Location>,
}

impl Backend {
    /// A new enabled backend with fresh state.
    pub fn new(address: impl Into<String>, weight: u32) -> Self {
        Self {
            address: address.into(),
            weight,
            admin: AdminState::Enabled,
            state: Arc::new(BackendState::new()),
            location: None,
        }
    }

    /// Whether this backend may take a *new* request: enabled, healthy, and
    /// with a non-zero weight.
    #[inline]
    pub fn is_usable(&self) -> bool {
        self.admin == AdminState::Enabled && self.weight > 0 && self.state.is_healthy()
    }

    /// Whether this backend may take a new request when health is ignored
    /// (panic mode): enabled with a non-zero weight.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.admin == AdminState::Enabled && self.weight > 0
    }

    /// Whether a draining backend has finished: draining (or disabled) and
    /// nothing in flight, so the operator may remove it without cutting a
    /// request.
    pub fn is_drained(&self) -> bool {
        self.admin != AdminState::Enabled && self.state.load.in_flight() == 0
    }
}

/// An immutable snapshot of a cluster's backends.
///
/// Built off the hot path; a request loads one snapshot and picks from it.
#[derive(Clone, Debug, Default)]
pub struct BackendSet {
    backends: Vec<Backend>,
    /// Length of the slow-start window; 0 disables slow start.
    slow_start: Nanos,
    /// Panic mode: see [`crate::health`]. Shared by clones of the snapshot.
    panic: Arc<PanicFlag>,
}

impl BackendSet {
    /// A snapshot over `backends`, in order (ids are positions).
    pub fn new(backends: Vec<Backend>) -> Self {
        assert!(backends.len() <= u32::MAX as usize, "too many backends");
        Self {
            backends,
            slow_start: 0,
            panic: Arc::new(PanicFlag::default()),
        }
    }

    /// Sets the slow-start window: a backend whose ramp began less than
    /// `window` ago gets a proportionally reduced effective weight.
    pub fn with_slow_start(mut self, window: Nanos) -> Self {
        self.slow_start = window;
        self
    }

    /// Sets the panic threshold in percent (0 = never panic) and computes
    /// the panic flag from the backends' current health.
    pub fn with_panic_threshold(mut self, percent: u32) -> Self {
        self.panic = Arc::new(PanicFlag::new(percent.min(100)));
        self.refresh_panic();
        self
    }

    /// Whether the cluster is in panic mode: fewer than the panic threshold
    /// of its enabled backends are healthy, so health is ignored and every
    /// enabled backend is a candidate.
    #[inline]
    pub fn in_panic(&self) -> bool {
        self.panic.active.load(Ordering::Relaxed)
    }

    pub(crate) fn panic_flag(&self) -> &AtomicBool {
        &self.panic.active
    }

    /// The panic threshold in percent (0 = never panic).
    pub fn panic_threshold(&self) -> u32 {
        self.panic.threshold
    }

    /// Whether backend `id` may take a new request: [`Backend::is_usable`],
    /// or in panic mode [`Backend::is_enabled`].
    #[inline]
    pub fn is_usable(&self, id: BackendId) -> bool {
        let b = self.get(id);
        if self.in_panic() {
            b.is_enabled()
        } else {
            b.is_usable()
        }
    }

    /// The slow-start window in nanoseconds (0 = off).
    pub fn slow_start(&self) -> Nanos {
        self.slow_start
    }

    /// All backends, in id order.
    #[inline]
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Number of backends (usable or not).
    #[inline]
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// True when the set has no backends at all.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The backend with id `id`.
    #[inline]
    pub fn get(&self, id: BackendId) -> &Backend {
        &self.backends[id.index()]
    }

    /// Finds a backend by address.
    pub fn find(&self, address: &str) -> Option<BackendId> {
        self.backends
            .iter()
            .position(|b| b.address == address)
            .map(|i| BackendId(i as u32))
    }

    /// Weight after slow start at `now`: ramps linearly from 10% to 100% of
    /// the configured weight over the window. Starting at 10% rather than 0
    /// lets a ramping backend take *some* traffic at once, so its latency
    /// is learned; the value is fractional, so weight-1 backends ramp too.
    #[inline]
    pub fn effective_weight(&self, id: BackendId, now: Nanos) -> f64 {
        let b = self.get(id);
        let w = b.weight as f64;
        if self.slow_start == 0 || b.weight == 0 {
            return w;
        }
        match b.state.ramp_since() {
            Some(since) if now < since.saturating_add(self.slow_start) => {
                let elapsed = now.saturating_sub(since) as f64 / self.slow_start as f64;
                w * (0.1 + 0.9 * elapsed)
            }
            _ => w,
        }
    }
}
