//! Concurrency limits: how many requests a cluster may have in flight.
//!
//! * [`Limit::Static`] — a fixed number, set by the operator.
//! * [`Limit::Gradient`] — an adaptive limit in the family of TCP Vegas,
//!   Netflix's `concurrency-limits` (Gradient) and Envoy's adaptive
//!   concurrency filter. By Little's law the useful concurrency is
//!   throughput × unloaded latency; past it, extra requests only queue
//!   inside the backends and every request pays the wait. The limiter
//!   watches the round-trip time:
//!
//!   ```text
//!   gradient  = clamp(min_rtt × (1 + tolerance) / sample_rtt, 0.5, 1.0)
//!   new_limit = limit × gradient + √limit          (√ is the headroom)
//!   limit     = limit + smoothing × (new_limit − limit)
//!   ```
//!
//!   `sample_rtt` is the mean RTT over a window ([`GradientConfig::window`],
//!   extended until it holds [`GradientConfig::min_samples`]); `min_rtt` is
//!   the lowest window mean seen since the last re-measurement. When
//!   latency stays near `min_rtt` the headroom term grows the limit by about
//!   √limit per window; when requests start queueing in the backends the
//!   gradient falls below 1 and pulls the limit back. The limit only grows
//!   while at least half of it is in use, so an idle cluster does not
//!   accumulate a limit it never tested.
//!
//!   `min_rtt` drifts with the backends (a deploy, a bigger instance), so
//!   every [`GradientConfig::min_rtt_interval`] the limiter re-measures it
//!   the way Envoy does: for one window the limit drops to its minimum, the
//!   backends drain their queues, and that window's mean becomes the new
//!   `min_rtt`.
//!
//! Everything is pure: time comes in as `now` (nanoseconds), samples as
//! arguments; tests drive it with an explicit clock.

use crate::{Nanos, MILLISECOND, SECOND};

/// Tunables of [`GradientLimit`].
#[derive(Clone, Debug, PartialEq)]
pub struct GradientConfig {
    /// Starting limit.
    pub initial: u32,
    /// Lowest limit (also the limit while `min_rtt` is re-measured).
    pub min: u32,
    /// Highest limit.
    pub max: u32,
    /// Shortest sampling window.
    pub window: Nanos,
    /// Fewest samples in a window; a window is extended until it has them.
    pub min_samples: u32,
    /// Latency above `min_rtt` tolerated before the limit shrinks (0.1 =
    /// 10%): absorbs jitter so the limit does not shrink on noise.
    pub tolerance: f64,
    /// Share of the computed change applied per window (0..=1): damps
    /// oscillation.
    pub smoothing: f64,
    /// How often `min_rtt` is re-measured (0: never).
    pub min_rtt_interval: Nanos,
}

/// 100 ms windows: enough samples at moderate rates, quick enough to react
/// within a second.
pub const DEFAULT_WINDOW: Nanos = 100 * MILLISECOND;
/// 10% tolerance, Envoy's default buffer.
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// Re-measure `min_rtt` every 30 s: rare enough that the brief dip costs
/// little, frequent enough to follow a changed fleet.
pub const DEFAULT_MIN_RTT_INTERVAL: Nanos = 30 * SECOND;

impl Default for GradientConfig {
    fn default() -> Self {
        Self {
            initial: 20,
            min: 1,
            max: 1000,
            window: DEFAULT_WINDOW,
            min_samples: 10,
            tolerance: DEFAULT_TOLERANCE,
            smoothing: 0.5,
            min_rtt_interval: DEFAULT_MIN_RTT_INTERVAL,
        }
    }
}

/// The gradient limiter's state.
#[derive(Clone, Debug)]
pub struct GradientLimit {
    config: GradientConfig,
    limit: f64,
    min_rtt: Option<f64>,
    window_start: Nanos,
    sum: f64,
    count: u32,
    /// Highest in-flight count seen in the window.
    peak_in_flight: u32,
    /// When `min_rtt` was last measured.
    measured_at: Nanos,
    /// True while the limit is held at its minimum to re-measure `min_rtt`.
    measuring: bool,
}

impl GradientLimit {
    /// A limiter starting at `config.initial` at time `now`.
    pub fn new(config: GradientConfig, now: Nanos) -> Self {
        let initial = f64::from(config.initial.clamp(config.min.max(1), config.max.max(1)));
        Self {
            config,
            limit: initial,
            min_rtt: None,
            window_start: now,
            sum: 0.0,
            count: 0,
            peak_in_flight: 0,
            measured_at: now,
            measuring: false,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        if self.measuring {
            self.config.min.max(1)
        } else {
            self.limit.round() as u32
        }
    }

    /// The current `min_rtt` estimate (nanoseconds), once measured.
    pub fn min_rtt(&self) -> Option<f64> {
        self.min_rtt
    }

    /// Records a completed request's round trip `rtt` at `now`, with
    /// `in_flight` requests outstanding when it started or ended.
    pub fn sample(&mut self, now: Nanos, rtt: Nanos, in_flight: u32) {
        self.sum += rtt as f64;
        self.count += 1;
        self.peak_in_flight = self.peak_in_flight.max(in_flight);
        let elapsed = now.saturating_sub(self.window_start);
        if elapsed < self.config.window || self.count < self.config.min_samples {
            return;
        }
        let mean = self.sum / f64::from(self.count);
        let used = self.peak_in_flight;
        self.window_start = now;
        self.sum = 0.0;
        self.count = 0;
        self.peak_in_flight = 0;
        if self.measuring {
            self.measuring = false;
            self.min_rtt = Some(mean);
            self.measured_at = now;
            return;
        }
        let min_rtt = match self.min_rtt {
            Some(m) if m <= mean => m,
            _ => {
                self.min_rtt = Some(mean);
                mean
            }
        };
        let gradient = (min_rtt * (1.0 + self.config.tolerance) / mean).clamp(0.5, 1.0);
        let mut target = self.limit * gradient + self.limit.sqrt();
        if gradient >= 1.0 && f64::from(used) < self.limit / 2.0 {
            // Not enough demand to tell whether more would help: hold.
            target = self.limit;
        }
        self.limit += self.config.smoothing * (target - self.limit);
        self.limit = self.limit.clamp(
            f64::from(self.config.min.max(1)),
            f64::from(self.config.max.max(1)),
        );
        if self.config.min_rtt_interval > 0
            && now.saturating_sub(self.measured_at) >= self.config.min_rtt_interval
        {
            self.measuring = true;
        }
    }
}

/// A cluster's concurrency limit.
#[derive(Clone, Debug)]
pub enum Limit {
    /// A fixed limit.
    Static(u32),
    /// An adaptive gradient limit.
    Gradient(GradientLimit),
}

impl Limit {
    /// The current limit.
    pub fn current(&self) -> u32 {
        match self {
            Limit::Static(n) => *n,
            Limit::Gradient(g) => g.limit(),
        }
    }

    /// Feeds a completed request's round trip (static limits ignore it).
    pub fn sample(&mut self, now: Nanos, rtt: Nanos, in_flight: u32) {
        if let Limit::Gradient(g) = self {
            g.sample(now, rtt, in_flight);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model backend pool: `capacity` concurrent requests at `latency`,
    /// more queue (latency grows linearly with the overload).
    fn rtt(limit: u32, capacity: u32, latency: Nanos) -> Nanos {
        latency * u64::from(limit.max(capacity)) / u64::from(capacity)
    }

    /// Runs the limiter against the model with saturating demand for
    /// `seconds`, one sample per completion, and returns the final limit.
    fn converge(
        g: &mut GradientLimit,
        capacity: u32,
        latency: Nanos,
        from: Nanos,
        seconds: u64,
    ) -> Nanos {
        let mut now = from;
        let end = from + seconds * SECOND;
        while now < end {
            let limit = g.limit();
            let r = rtt(limit, capacity, latency);
            // `limit` completions per round trip, spread evenly.
            for _ in 0..limit {
                now += r / u64::from(limit);
                g.sample(now, r, limit);
            }
        }
        now
    }

    #[test]
    fn gradient_limit_converges_near_capacity() {
        let config = GradientConfig {
            initial: 5,
            ..GradientConfig::default()
        };
        let mut g = GradientLimit::new(config, 0);
        converge(&mut g, 40, 10 * MILLISECOND, 0, 20);
        let limit = g.limit();
        assert!((40..=60).contains(&limit), "limit {limit} for capacity 40");
        assert_eq!(g.min_rtt(), Some(10.0 * MILLISECOND as f64));
    }

    #[test]
    fn gradient_limit_shrinks_when_capacity_drops() {
        let mut g = GradientLimit::new(GradientConfig::default(), 0);
        let now = converge(&mut g, 100, 10 * MILLISECOND, 0, 20);
        assert!(g.limit() >= 100, "{}", g.limit());
        converge(&mut g, 20, 10 * MILLISECOND, now, 8);
        let limit = g.limit();
        assert!((20..=32).contains(&limit), "limit {limit} for capacity 20");
    }

    #[test]
    fn gradient_limit_holds_when_demand_is_low() {
        let mut g = GradientLimit::new(GradientConfig::default(), 0);
        let mut now = 0;
        for _ in 0..1000 {
            now += MILLISECOND;
            g.sample(now, 5 * MILLISECOND, 2);
        }
        assert_eq!(g.limit(), 20);
    }

    #[test]
    fn gradient_limit_remeasures_min_rtt_at_the_minimum() {
        let config = GradientConfig {
            min_rtt_interval: SECOND,
            min_samples: 1,
            ..GradientConfig::default()
        };
        let mut g = GradientLimit::new(config, 0);
        let mut now = 0;
        for _ in 0..10 {
            now += 100 * MILLISECOND;
            g.sample(now, 10 * MILLISECOND, 20);
        }
        assert_eq!(g.limit(), 1, "held at the minimum while re-measuring");
        // The backends got slower: the re-measured min_rtt follows.
        now += 100 * MILLISECOND;
        g.sample(now, 30 * MILLISECOND, 1);
        assert_eq!(g.min_rtt(), Some(30.0 * MILLISECOND as f64));
        assert!(g.limit() > 1);
    }

    #[test]
    fn static_limit_ignores_samples() {
        let mut l = Limit::Static(7);
        l.sample(SECOND, SECOND, 100);
        assert_eq!(l.current(), 7);
    }
}
