//! Selectors: the algorithms that pick a backend.
//!
//! A [`Selector`] is built from an [`Algorithm`] for one [`BackendSet`]
//! snapshot (off the hot path) and then asked to [`pick`](Selector::pick)
//! once per request. `pick` is synchronous, allocation-free and pure apart
//! from the selector's own atomic counters: the set, the load readings,
//! `now`, the request key and the RNG all come in as arguments.
//!
//! Every selector
//!
//! * returns `None` only when no backend is a candidate;
//! * never returns a backend that is not a candidate (see
//!   [`PickContext::is_candidate`]: enabled, healthy, non-zero weight, not
//!   already tried by this request);
//! * honours weights (and so slow start, through
//!   [`BackendSet::effective_weight`]).
//!
//! One file per algorithm, named after its type:
//!
//! | name | type | picks | cost per pick |
//! |---|---|---|---|
//! | `round-robin` | [`RoundRobin`] | each candidate in turn, weights ignored | O(1) |
//! | `weighted-round-robin` | [`WeightedRoundRobin`] | NGINX's smooth weighted order, precomputed | O(1) |
//! | `least-conn` | [`LeastConn`] | fewest `(in_flight + 1) / weight`, random among ties | O(n) |
//! | `random` | [`Random`] | weighted random | O(log n) |
//! | `p2c` | [`P2c`] | the less loaded of two random candidates | O(1) |
//! | `peak-ewma` (default) | [`PeakEwma`] | best of 3 random on latency × (in_flight + 1) × error penalty | O(1) |
//! | `prequal` | [`Prequal`] | probe pool + hot-cold lexicographic rule | O(pool) |
//! | `ring-hash` | [`RingHash`] | consistent hashing of the key, bounded load | O(log n) |
//! | `maglev` | [`Maglev`] | Maglev table lookup of the key, bounded load | O(1) |
//! | `geo` | [`Geo`] | nearest zone with headroom, peak-EWMA inside it | O(zones²) |
//!
//! For the `x-fulcrum-debug` header, [`Selector::explain`] picks and
//! describes the decision.

use std::fmt;
use std::str::FromStr;

use crate::backend::{BackendId, BackendSet};
use crate::Nanos;

mod bounded_load;
mod geo;
mod hashing;
mod least_conn;
mod maglev;
mod p2c;
mod peak_ewma;
mod prequal;
mod random;
mod report_shares;
mod ring_hash;
mod round_robin;
mod sampling;
mod weight_table;
mod weighted_round_robin;

pub use bounded_load::{BoundedLoad, DEFAULT_BALANCE_FACTOR};
pub use geo::{Geo, GeoPoint, Location};
pub use least_conn::LeastConn;
pub use maglev::Maglev;
pub use p2c::P2c;
pub use peak_ewma::{PeakEwma, DEFAULT_ERROR_PENALTY};
pub use prequal::{Prequal, DEFAULT_MAX_AGE, DEFAULT_PROBES, DEFAULT_Q_RIF, POOL_SIZE};
pub use random::Random;
pub use report_shares::ReportShares;
pub use ring_hash::RingHash;
pub use round_robin::RoundRobin;
pub use weight_table::WeightTable;
pub use weighted_round_robin::WeightedRoundRobin;

/// Everything about the current request a selector may look at.
#[derive(Debug)]
pub struct PickContext<'a> {
    /// Current monotonic time.
    pub now: Nanos,
    /// Hash of the request's affinity key (header, cookie, path, client IP),
    /// for hashing selectors.
    pub key: Option<u64>,
    /// Seeded randomness.
    pub rng: &'a mut fastrand::Rng,
    /// Backends this request already tried (retries go elsewhere).
    pub exclude: &'a [BackendId],
    /// Where the client is, when known (GeoIP or a trusted header), for
    /// the `geo` selector.
    pub client: Option<GeoPoint>,
    /// Ignore health for this pick, as panic mode does for the whole
    /// cluster: every enabled backend not yet tried is a candidate. Set by
    /// [`pick_or_fall_back`] once no healthy candidate is left.
    pub ignore_health: bool,
}

impl<'a> PickContext<'a> {
    /// A context with no key and nothing excluded.
    pub fn new(now: Nanos, rng: &'a mut fastrand::Rng) -> Self {
        Self {
            now,
            key: None,
            rng,
            exclude: &[],
            client: None,
            ignore_health: false,
        }
    }

    /// Whether `id` may take this request: usable (or merely enabled while
    /// the set is in panic mode, see [`BackendSet::is_usable`], or while
    /// [`ignore_health`](Self::ignore_health) is set) and not already tried.
    #[inline]
    pub fn is_candidate(&self, set: &BackendSet, id: BackendId) -> bool {
        let usable = if self.ignore_health {
            set.get(id).is_enabled()
        } else {
            set.is_usable(id)
        };
        usable && !self.exclude.contains(&id)
    }
}

/// Picks with `selector` like [`Selector::pick`] (or
/// [`Selector::explain`] when `explain` is given); when no healthy
/// candidate is left, picks again with health ignored
/// ([`PickContext::ignore_health`]): panic mode for this one request.
///
/// Panic mode is a cluster-wide verdict on the health bits, and the health
/// bits lag: a backend that just died is still "healthy" until probes or
/// outlier detection notice, and an ejected backend that came back stays
/// ejected for its whole ejection. With one healthy backend of two enabled
/// (exactly a 50% threshold, no panic) and that one dead, a request that was
/// refused by it had no candidate left for its retry, although the ejected
/// backend was alive. Falling back makes a dead backend cost a retry, not an
/// error; it only ever widens an empty choice, so it changes nothing while a
/// healthy untried backend remains.
///
/// A cluster whose panic threshold is 0 (never panic) never falls back:
/// its operator asked for health to be respected whatever happens.
pub fn pick_or_fall_back(
    selector: &dyn Selector,
    set: &BackendSet,
    ctx: &mut PickContext<'_>,
    mut explain: Option<&mut String>,
) -> Option<BackendId> {
    let mut pick = |ctx: &mut PickContext<'_>| match explain.as_deref_mut() {
        None => selector.pick(set, ctx),
        Some(out) => {
            if !out.is_empty() {
                out.push_str(" | ");
            }
            if ctx.ignore_health {
                out.push_str("health ignored: ");
            }
            selector.explain(set, ctx, out)
        }
    };
    if let Some(id) = pick(ctx) {
        return Some(id);
    }
    if ctx.ignore_health || set.panic_threshold() == 0 {
        return None;
    }
    ctx.ignore_health = true;
    let picked = pick(ctx);
    ctx.ignore_health = false;
    picked
}

/// An algorithm that picks a backend for one request.
pub trait Selector: Send + Sync + fmt::Debug {
    /// The algorithm's configuration name (`"round-robin"`, ...).
    fn name(&self) -> &'static str;

    /// Picks a candidate backend, or `None` when there is none.
    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId>;

    /// Picks like [`pick`](Selector::pick) and appends a one-line,
    /// human-readable account of the decision to `out`, e.g.
    /// `peak-ewma; picked=10.0.0.1:80; candidates=10.0.0.1:80 cost=1.2ms, 10.0.0.2:80 cost=30ms`.
    ///
    /// For the `x-fulcrum-debug` response header only: it may allocate and
    /// may be slower than `pick`. The default names the pick; selectors that
    /// compare scores list the candidates they considered (at most
    /// [`EXPLAIN_MAX_CANDIDATES`]).
    fn explain(
        &self,
        set: &BackendSet,
        ctx: &mut PickContext<'_>,
        out: &mut String,
    ) -> Option<BackendId> {
        let picked = self.pick(set, ctx);
        write_header(out, self.name(), set, picked);
        picked
    }
}

/// Most candidates an [`explain`](Selector::explain) line lists, so a debug
/// header stays a header even for a cluster of thousands.
pub const EXPLAIN_MAX_CANDIDATES: usize = 16;

/// Writes `name; picked=ADDRESS` (or `picked=none`).
pub(crate) fn write_header(
    out: &mut String,
    name: &str,
    set: &BackendSet,
    picked: Option<BackendId>,
) {
    out.push_str(name);
    out.push_str("; picked=");
    match picked {
        Some(id) => out.push_str(&set.get(id).address),
        None => out.push_str("none"),
    }
}

/// Tunables shared by the selectors; each uses the ones it needs.
#[derive(Clone, Debug, PartialEq)]
pub struct SelectorConfig {
    /// τ of the peak-EWMA latency average. Finagle's default is 10 s:
    /// long enough to remember a slow backend, short enough to forgive it.
    pub decay: Nanos,
    /// `k` in the error penalty `1 + k × error_rate` that multiplies a
    /// backend's cost in `peak-ewma` and `prequal` (see
    /// [`DEFAULT_ERROR_PENALTY`] for why 100).
    pub error_penalty: f64,
    /// `prequal`'s hot/cold quantile Q_RIF (paper default 0.84, see
    /// [`DEFAULT_Q_RIF`]).
    pub prequal_q_rif: f64,
    /// `prequal`'s probes per pick, r_probe (default 3, at most 8).
    pub prequal_probes: u32,
    /// Age after which a `prequal` probe is no longer used (default 1 s).
    pub prequal_max_age: Nanos,
    /// Age after which a backend's own load report (ORCA) is ignored.
    /// Default 30 s: three of gRPC's default 10 s out-of-band report periods,
    /// so one lost report does not drop the signal.
    pub report_max_age: Nanos,
    /// Bounded-load factor c of `ring-hash` and `maglev`: a backend takes a
    /// key only while below `c ×` its fair share of the requests in flight
    /// (default 1.25, see [`DEFAULT_BALANCE_FACTOR`]).
    pub hash_balance_factor: f64,
    /// `geo`: a backend has headroom while it has fewer requests than this
    /// in flight; a zone without such a backend spills to the next nearest
    /// (default [`DEFAULT_GEO_MAX_IN_FLIGHT`]).
    pub geo_max_in_flight: u32,
}

/// Default of [`SelectorConfig::geo_max_in_flight`]: 100 requests in flight
/// per backend. Past that a backend is usually queueing (a few ms of service
/// time × 100 is already a visible wait), so a nearby zone a few ms away
/// serves faster.
pub const DEFAULT_GEO_MAX_IN_FLIGHT: u32 = 100;

impl Default for SelectorConfig {
    fn default() -> Self {
        Self {
            decay: 10 * crate::SECOND,
            error_penalty: DEFAULT_ERROR_PENALTY,
            prequal_q_rif: DEFAULT_Q_RIF,
            prequal_probes: DEFAULT_PROBES,
            prequal_max_age: DEFAULT_MAX_AGE,
            report_max_age: 30 * crate::SECOND,
            hash_balance_factor: DEFAULT_BALANCE_FACTOR,
            geo_max_in_flight: DEFAULT_GEO_MAX_IN_FLIGHT,
        }
    }
}

/// The algorithms a cluster can use, by configuration name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Each candidate in turn.
    RoundRobin,
    /// Smooth weighted round-robin (NGINX).
    WeightedRoundRobin,
    /// Fewest in flight per unit of weight, full scan.
    LeastConn,
    /// Weighted random.
    Random,
    /// Power of two choices on in-flight per weight.
    P2c,
    /// Best of three random choices on peak-EWMA latency × (in-flight + 1)
    /// (Finagle's P2C peak EWMA with a third choice).
    PeakEwma,
    /// Probe pool + hot-cold lexicographic rule (Prequal, NSDI'24).
    Prequal,
    /// Consistent hashing on a ring, with bounded load.
    RingHash,
    /// Maglev lookup-table hashing, with bounded load.
    Maglev,
    /// Nearest zone with headroom, spilling over by distance.
    Geo,
}

/// The error for an algorithm name Fulcrum does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown algorithm `{name}`, expected one of: {}", Algorithm::NAMES.join(", "))]
pub struct UnknownAlgorithm {
    /// The name that was given.
    pub name: String,
}

impl Algorithm {
    /// Every algorithm, in documentation order.
    pub const ALL: &'static [Algorithm] = &[
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConn,
        Algorithm::Random,
        Algorithm::P2c,
        Algorithm::PeakEwma,
        Algorithm::Prequal,
        Algorithm::RingHash,
        Algorithm::Maglev,
        Algorithm::Geo,
    ];

    /// Every configuration name, in documentation order.
    pub const NAMES: &'static [&'static str] = &[
        "round-robin",
        "weighted-round-robin",
        "least-conn",
        "random",
        "p2c",
        "peak-ewma",
        "prequal",
        "ring-hash",
        "maglev",
        "geo",
    ];

    /// The algorithm used when a cluster names none: `peak-ewma`, which
    /// reacts to slow, queued and failing backends alike at O(1) per pick,
    /// and degrades to best-of-three on requests in flight when latencies are equal.
    pub const DEFAULT: Algorithm = Algorithm::PeakEwma;

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::WeightedRoundRobin => "weighted-round-robin",
            Algorithm::LeastConn => "least-conn",
            Algorithm::Random => "random",
            Algorithm::P2c => "p2c",
            Algorithm::PeakEwma => "peak-ewma",
            Algorithm::Prequal => "prequal",
            Algorithm::RingHash => "ring-hash",
            Algorithm::Maglev => "maglev",
            Algorithm::Geo => "geo",
        }
    }

    /// Builds a selector for `set`.
    pub fn build(self, set: &BackendSet, config: &SelectorConfig) -> Box<dyn Selector> {
        match self {
            Algorithm::RoundRobin => Box::new(RoundRobin::new()),
            Algorithm::WeightedRoundRobin => Box::new(WeightedRoundRobin::new(set)),
            Algorithm::LeastConn => Box::new(LeastConn::new()),
            Algorithm::Random => Box::new(Random::new(set)),
            Algorithm::P2c => Box::new(P2c::new()),
            Algorithm::PeakEwma => Box::new(PeakEwma::new(set, config)),
            Algorithm::Prequal => Box::new(Prequal::new(set, config)),
            Algorithm::RingHash => Box::new(RingHash::new(set, config)),
            Algorithm::Maglev => Box::new(Maglev::new(set, config)),
            Algorithm::Geo => Box::new(Geo::new(set, config)),
        }
    }
}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .iter()
            .copied()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownAlgorithm { name: s.to_owned() })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for selector tests.
    use crate::backend::{AdminState, Backend, BackendSet};

    /// A set of backends named `b0..` with the given weights.
    pub fn set_with_weights(weights: &[u32]) -> BackendSet {
        BackendSet::new(
            weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Backend::new(format!("b{i}"), w))
                .collect(),
        )
    }

    /// Marks backend `i` disabled.
    pub fn disable(set: BackendSet, i: usize) -> BackendSet {
        let mut backends = set.backends().to_vec();
        backends[i].admin = AdminState::Disabled;
        BackendSet::new(backends)
    }
}
