//! Load: live, lock-free signals about one backend.
//!
//! * **in flight** — requests (or connections) currently outstanding,
//!   counted by an RAII [`InFlightGuard`] so that no early return, error or
//!   cancelled future can leak a count;
//! * **peak EWMA latency** — Finagle's peak-sensitive moving average: a
//!   sample above the estimate replaces it at once (the "peak"), a sample
//!   below it is blended in with weight `1 - exp(-Δt / τ)`. Between samples
//!   the estimate does not move; readers decay it toward zero with the same
//!   τ so an idle backend is tried again;
//! * **latency per request in flight** — per-completion moving averages of
//!   the latency and of the requests in flight when a request completes;
//!   their ratio is what one more request in the queue costs, so
//!   [`Load::queue_latency`] can say what a request joining `k` others should
//!   expect *now* (Little's law: for a FCFS server it is the service time,
//!   for an I/O-bound one the inverse of its throughput), where the peak
//!   EWMA only remembers what earlier requests saw;
//! * **errors** — totals and an EWMA error rate, so a backend that fails fast
//!   does not look attractive merely because it answers quickly;
//! * **reported load** — a utilisation figure the backend reports itself
//!   (ORCA `endpoint-load-metrics`), shared by every proxy in front of it.
//!
//! Updates race benignly: two concurrent observations may lose one blend
//! step, which moves the estimate by less than one sample's weight.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::Nanos;

/// How a request ended, as far as load tracking cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The backend answered with something other than a server error.
    Success,
    /// Connect failure, reset, timeout or a 5xx.
    Failure,
}

/// Latency assumed for a backend that has never answered: 10 ms. Starting at
/// zero would make a new backend look infinitely attractive and flood it; a
/// modest default lets it earn its place within a few requests.
pub const DEFAULT_LATENCY: Nanos = 10_000_000;

/// Weight of one completion in the per-request latency averages
/// ([`Load::queue_latency`]): 1/32, a memory of about 32 completions. The
/// averages must follow a queue that builds up within tens of requests (a
/// time constant such as the peak EWMA's 10 s is ten thousand completions at
/// 1 000 requests per second), yet not jump with every exponential sample
/// (1/32 keeps the noise of a CV-1 latency to about 13%).
pub const QUEUE_AVERAGE_WEIGHT: f64 = 1.0 / 32.0;

/// Live load signals of one backend.
#[derive(Debug)]
pub struct Load {
    in_flight: AtomicU32,
    /// Peak EWMA latency estimate, nanoseconds as f64 bits; NaN before the first sample.
    ewma: AtomicU64,
    /// When `ewma` was last updated.
    ewma_at: AtomicU64,
    /// EWMA of the failure indicator (0.0..=1.0), f64 bits.
    error_rate: AtomicU64,
    /// EWMA of the fast-failure indicator (0.0..=1.0), f64 bits: failures
    /// that came back sooner than the mean latency.
    fast_error_rate: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Per-completion EWMA of latency (ns, f64 bits); NaN before the first sample.
    mean_latency: AtomicU64,
    /// Per-completion EWMA of the requests in flight at completion
    /// (counting the completing one, so ≥ 1), f64 bits.
    mean_in_flight: AtomicU64,
    /// Backend-reported utilisation (0.0..), f64 bits; NaN when none reported.
    reported: AtomicU64,
    reported_at: AtomicU64,
    /// Per-completion EWMA of latency (ns, f64 bits) over completions seen
    /// while a report was on hand; NaN before the first.
    reported_latency: AtomicU64,
    /// Per-completion EWMA of `1 + reported utilisation` over the same
    /// completions, f64 bits; NaN before the first.
    reported_queue: AtomicU64,
    /// Per-completion EWMA of `(1 + utilisation) × latency` over the same
    /// completions, f64 bits; NaN before the first.
    reported_cross: AtomicU64,
    /// Per-completion EWMA of `(1 + utilisation)²`, f64 bits; NaN before the first.
    reported_square: AtomicU64,
}

impl Default for Load {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

#[inline]
fn store_f64(a: &AtomicU64, v: f64) {
    a.store(v.to_bits(), Ordering::Relaxed)
}

impl Load {
    /// No history: nothing in flight, no latency sample, no report.
    pub fn new() -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            ewma: AtomicU64::new(f64::NAN.to_bits()),
            ewma_at: AtomicU64::new(0),
            error_rate: AtomicU64::new(0f64.to_bits()),
            fast_error_rate: AtomicU64::new(0f64.to_bits()),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            mean_latency: AtomicU64::new(f64::NAN.to_bits()),
            mean_in_flight: AtomicU64::new(f64::NAN.to_bits()),
            reported: AtomicU64::new(f64::NAN.to_bits()),
            reported_at: AtomicU64::new(0),
            reported_latency: AtomicU64::new(f64::NAN.to_bits()),
            reported_queue: AtomicU64::new(f64::NAN.to_bits()),
            reported_cross: AtomicU64::new(f64::NAN.to_bits()),
            reported_square: AtomicU64::new(f64::NAN.to_bits()),
        }
    }

    /// Requests currently in flight.
    #[inline]
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard is dropped.
    #[inline]
    pub fn start(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            load: Arc::clone(self),
        }
    }

    /// Completed requests observed so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Failed requests observed so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Records a finished request: its latency (`now - started`) and outcome.
    ///
    /// `decay` is τ of the moving averages in nanoseconds.
    pub fn observe(&self, now: Nanos, latency: Nanos, outcome: Outcome, decay: Nanos) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let failed = outcome == Outcome::Failure;
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let last = self.ewma_at.swap(now, Ordering::Relaxed);
        let w = blend_weight(now.saturating_sub(last), decay);
        let sample = latency as f64;
        let old = load_f64(&self.ewma);
        let new = if old.is_nan() || sample > old {
            sample
        } else {
            old * w + sample * (1.0 - w)
        };
        store_f64(&self.ewma, new);
        // Per-request averages. `observe` runs while the request still
        // counts as in flight, so the count includes it; `max(1)` covers
        // callers that drop the guard first.
        // A failure is no evidence of speed: a fast error (a fail-fast
        // "sinkhole") must not lower the estimate, a slow one (a timeout)
        // raises it.
        let in_flight = f64::from(self.in_flight().max(1));
        let mean = load_f64(&self.mean_latency);
        // A failure sooner than the mean answer (or before any) is a fast
        // one: a sinkhole's signature, unlike a timeout.
        let fast_failure = failed && (mean.is_nan() || sample < mean);
        let f = load_f64(&self.fast_error_rate);
        let x = if fast_failure { 1.0 } else { 0.0 };
        store_f64(&self.fast_error_rate, f + (x - f) / 8.0);
        let latency_sample = if failed && !mean.is_nan() {
            sample.max(mean)
        } else {
            sample
        };
        blend_mean(&self.mean_latency, latency_sample);
        blend_mean(&self.mean_in_flight, in_flight);
        let reported = load_f64(&self.reported);
        if !reported.is_nan() {
            blend_mean(&self.reported_latency, latency_sample);
            blend_mean(&self.reported_queue, 1.0 + reported);
            blend_mean(&self.reported_cross, (1.0 + reported) * latency_sample);
            blend_mean(&self.reported_square, (1.0 + reported) * (1.0 + reported));
        }
        // Error rate: a faster-moving average (a tenth of τ per sample step is
        // too slow for fail-fast backends, so blend per request with 1/8 weight).
        let e = load_f64(&self.error_rate);
        let x = if failed { 1.0 } else { 0.0 };
        store_f64(&self.error_rate, e + (x - e) / 8.0);
    }

    /// The raw peak-EWMA latency estimate in nanoseconds, `None` before the first sample.
    pub fn latency_estimate(&self) -> Option<f64> {
        let v = load_f64(&self.ewma);
        (!v.is_nan()).then_some(v)
    }

    /// The latency estimate decayed toward zero for the time since the last
    /// sample; [`DEFAULT_LATENCY`] when there is none.
    #[inline]
    pub fn decayed_latency(&self, now: Nanos, decay: Nanos) -> f64 {
        let v = load_f64(&self.ewma);
        if v.is_nan() {
            return DEFAULT_LATENCY as f64;
        }
        let at = self.ewma_at.load(Ordering::Relaxed);
        v * blend_weight(now.saturating_sub(at), decay)
    }

    /// For a backend with no latency sample yet: when a selector first
    /// priced it (the first call records `now`). A default estimate then
    /// decays from that moment like a real one, so a backend that has never
    /// been tried is eventually tried even when the others are faster than
    /// the default.
    pub fn unsampled_since(&self, now: Nanos) -> Nanos {
        match self
            .ewma_at
            .compare_exchange(0, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => now.max(1),
            Err(at) => at,
        }
    }

    /// What one request in the queue costs in latency (nanoseconds): the mean
    /// latency over the mean requests in flight at completion (Little's law),
    /// `None` before the first sample.
    #[inline]
    pub fn latency_per_request(&self) -> Option<f64> {
        let latency = load_f64(&self.mean_latency);
        let in_flight = load_f64(&self.mean_in_flight);
        (!latency.is_nan()).then(|| latency / in_flight.max(1.0))
    }

    /// The latency a request joining `in_flight` others should expect now:
    /// [`latency_per_request`](Self::latency_per_request) × (`in_flight` + 1).
    /// Unlike the peak EWMA it follows the queue at once, grows while
    /// requests pile up without completing, and does not decay to zero
    /// while they wait.
    #[inline]
    pub fn queue_latency(&self, in_flight: f64) -> Option<f64> {
        self.latency_per_request()
            .map(|unit| unit * (in_flight.max(0.0) + 1.0))
    }

    /// How well the reports predicted the latency of this proxy's requests:
    /// `(cov(latency, 1 + u), latency_per_reported_unit × var(1 + u))` over
    /// the recent completions seen with a report `u`. Their ratio is 1 when
    /// latency follows the reported queue exactly (`latency = s × (1 + u)`)
    /// and 0 when the report says nothing about it (it is too old); callers
    /// pool both parts over backends before dividing. `None` before the
    /// first such completion.
    pub fn report_fit(&self) -> Option<(f64, f64)> {
        let latency = load_f64(&self.reported_latency);
        let queue = load_f64(&self.reported_queue);
        let cross = load_f64(&self.reported_cross);
        let square = load_f64(&self.reported_square);
        if latency.is_nan() || queue.is_nan() || cross.is_nan() || square.is_nan() {
            return None;
        }
        let covariance = cross - queue * latency;
        let variance = (square - queue * queue).max(0.0);
        Some((covariance, latency / queue.max(1.0) * variance))
    }

    /// EWMA of the failure rate, 0.0 ..= 1.0.
    #[inline]
    pub fn error_rate(&self) -> f64 {
        load_f64(&self.error_rate)
    }

    /// The error rate decayed toward zero for the time since the last
    /// observation, with the same τ as the latency: a backend that failed
    /// and was then avoided (so produced no successes to lower its rate) is
    /// forgiven with time and tried again.
    #[inline]
    pub fn decayed_error_rate(&self, now: Nanos, decay: Nanos) -> f64 {
        self.decayed(&self.error_rate, now, decay)
    }

    /// Like [`decayed_error_rate`](Self::decayed_error_rate), counting only
    /// the failures that came back sooner than the mean latency (fail-fast
    /// errors, not timeouts). A backend that fails fast looks idle in its
    /// load reports; one whose requests time out has a long reported queue,
    /// which already prices it, and must not also be starved of traffic
    /// for the ten seconds its error rate takes to be forgiven once its
    /// queue has drained.
    #[inline]
    pub fn decayed_fast_error_rate(&self, now: Nanos, decay: Nanos) -> f64 {
        self.decayed(&self.fast_error_rate, now, decay)
    }

    /// `rate` (an EWMA updated with the latency) decayed toward zero for
    /// the time since the last observation.
    #[inline]
    fn decayed(&self, rate: &AtomicU64, now: Nanos, decay: Nanos) -> f64 {
        let e = load_f64(rate);
        if e == 0.0 {
            return 0.0;
        }
        let at = self.ewma_at.load(Ordering::Relaxed);
        e * blend_weight(now.saturating_sub(at), decay)
    }

    /// Records a load report from the backend itself (e.g. ORCA utilisation).
    pub fn report(&self, now: Nanos, utilisation: f64) {
        if utilisation.is_finite() && utilisation >= 0.0 {
            store_f64(&self.reported, utilisation);
            self.reported_at.store(now, Ordering::Relaxed);
        }
    }

    /// The last reported utilisation if it is younger than `max_age`.
    pub fn reported(&self, now: Nanos, max_age: Nanos) -> Option<f64> {
        self.report_reading(now, max_age).map(|(v, _)| v)
    }

    /// The last reported utilisation and when it arrived, if it is younger
    /// than `max_age`.
    pub fn report_reading(&self, now: Nanos, max_age: Nanos) -> Option<(f64, Nanos)> {
        let v = load_f64(&self.reported);
        let at = self.reported_at.load(Ordering::Relaxed);
        (!v.is_nan() && now.saturating_sub(at) <= max_age).then_some((v, at))
    }

    /// What one unit of reported utilisation costs in latency (ns): the mean
    /// latency of requests that completed while a report was on hand over
    /// the mean of `1 + utilisation` reported meanwhile. For a FCFS server
    /// reporting its queue per worker this is the service time per worker
    /// (a request arriving behind `q` others waits `q + 1` services), which
    /// the proxy's own in-flight count cannot give when it sends only a
    /// small part of the backend's traffic. A ratio of means, so a report
    /// that is stale but right on average still gives the right figure.
    /// `None` before the first such completion.
    #[inline]
    pub fn latency_per_reported_unit(&self) -> Option<f64> {
        let latency = load_f64(&self.reported_latency);
        let queue = load_f64(&self.reported_queue);
        (!latency.is_nan() && !queue.is_nan()).then(|| latency / queue.max(1.0))
    }
}

/// Blends `sample` into the per-completion average `a` (NaN = empty).
#[inline]
fn blend_mean(a: &AtomicU64, sample: f64) {
    let old = load_f64(a);
    let new = if old.is_nan() {
        sample
    } else {
        old + (sample - old) * QUEUE_AVERAGE_WEIGHT
    };
    store_f64(a, new);
}

/// `exp(-elapsed / decay)`: how much of an estimate survives `elapsed`
/// nanoseconds with no new sample.
#[inline]
pub fn decay_weight(elapsed: Nanos, decay: Nanos) -> f64 {
    blend_weight(elapsed, decay)
}

/// `exp(-elapsed / decay)`: how much of the old estimate survives.
#[inline]
fn blend_weight(elapsed: Nanos, decay: Nanos) -> f64 {
    if decay == 0 {
        return 0.0;
    }
    (-(elapsed as f64) / decay as f64).exp()
}

/// Counts one request in flight on a backend for as long as it lives.
#[derive(Debug)]
#[must_use = "the request stops counting as in flight when the guard is dropped"]
pub struct InFlightGuard {
    load: Arc<Load>,
}

impl InFlightGuard {
    /// The load this guard counts against.
    pub fn load(&self) -> &Load {
        &self.load
    }
}

impl Drop for InFlightGuard {
    #[inline]
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MILLISECOND;

    #[test]
    fn guard_counts_in_flight_until_dropped() {
        let load = Arc::new(Load::new());
        let a = load.start();
        let b = load.start();
        assert_eq!(load.in_flight(), 2);
        drop(a);
        assert_eq!(load.in_flight(), 1);
        drop(b);
        assert_eq!(load.in_flight(), 0);
    }

    #[test]
    fn peak_ewma_jumps_to_peaks_and_decays_slowly() {
        let load = Load::new();
        let tau = 10_000 * MILLISECOND;
        load.observe(MILLISECOND, 10 * MILLISECOND, Outcome::Success, tau);
        assert_eq!(load.latency_estimate(), Some(10.0 * MILLISECOND as f64));
        load.observe(2 * MILLISECOND, 100 * MILLISECOND, Outcome::Success, tau);
        assert_eq!(load.latency_estimate(), Some(100.0 * MILLISECOND as f64));
        load.observe(3 * MILLISECOND, MILLISECOND, Outcome::Success, tau);
        let est = load.latency_estimate().unwrap();
        assert!(
            est > 99.0 * MILLISECOND as f64,
            "a fast sample barely moves a peak: {est}"
        );
    }

    #[test]
    fn error_rate_rises_on_failures() {
        let load = Load::new();
        for i in 0..20 {
            load.observe(i, MILLISECOND, Outcome::Failure, SECOND_TAU);
        }
        assert!(load.error_rate() > 0.9);
        assert_eq!(load.failures(), 20);
    }

    #[test]
    fn error_rate_is_forgiven_with_time() {
        let load = Load::new();
        load.observe(0, MILLISECOND, Outcome::Failure, SECOND_TAU);
        let fresh = load.decayed_error_rate(0, SECOND_TAU);
        assert!(fresh > 0.1);
        assert!(load.decayed_error_rate(5 * SECOND_TAU, SECOND_TAU) < fresh / 100.0);
    }

    #[test]
    fn queue_latency_scales_with_the_queue() {
        let load = Arc::new(Load::new());
        assert_eq!(load.queue_latency(3.0), None);
        // Requests that finish with three others in flight, 8 ms each:
        // 2 ms per request in the queue.
        let _others: Vec<_> = (0..3).map(|_| load.start()).collect();
        for i in 0..100 {
            let guard = load.start();
            load.observe(i, 8 * MILLISECOND, Outcome::Success, SECOND_TAU);
            drop(guard);
        }
        let per_request = load.latency_per_request().unwrap();
        assert!((per_request - 2e6).abs() < 1.0, "{per_request}");
        assert!((load.queue_latency(9.0).unwrap() - 20e6).abs() < 10.0);
    }

    #[test]
    fn fast_failures_do_not_make_a_backend_look_fast() {
        let load = Load::new();
        load.observe(0, 10 * MILLISECOND, Outcome::Success, SECOND_TAU);
        for i in 1..100 {
            load.observe(i, MILLISECOND / 10, Outcome::Failure, SECOND_TAU);
        }
        assert_eq!(load.latency_per_request(), Some(10.0 * MILLISECOND as f64));
    }

    #[test]
    fn fast_error_rate_counts_fail_fast_errors_not_timeouts() {
        let timing_out = Load::new();
        let failing_fast = Load::new();
        for i in 0..20 {
            timing_out.observe(i, 2 * MILLISECOND, Outcome::Success, SECOND_TAU);
            failing_fast.observe(i, 2 * MILLISECOND, Outcome::Success, SECOND_TAU);
        }
        for i in 20..40 {
            timing_out.observe(i, 20 * MILLISECOND, Outcome::Failure, SECOND_TAU);
            failing_fast.observe(i, MILLISECOND / 10, Outcome::Failure, SECOND_TAU);
        }
        assert!(timing_out.decayed_error_rate(40, SECOND_TAU) > 0.9);
        assert_eq!(timing_out.decayed_fast_error_rate(40, SECOND_TAU), 0.0);
        assert!(failing_fast.decayed_fast_error_rate(40, SECOND_TAU) > 0.9);
    }

    #[test]
    fn reports_that_predict_latency_are_trusted_and_priced() {
        // Latency = 2 ms × (1 + reported queue): a fresh report.
        let fresh = Load::new();
        let mut rng = fastrand::Rng::with_seed(4);
        for i in 0..500 {
            let u = rng.u32(0..8) as f64;
            fresh.report(i, u);
            let latency = (2.0 * MILLISECOND as f64 * (1.0 + u)) as Nanos;
            fresh.observe(i, latency, Outcome::Success, SECOND_TAU);
        }
        let unit = fresh.latency_per_reported_unit().unwrap();
        assert!((unit - 2e6).abs() < 1e3, "{unit}");
        let (covariance, variance) = fresh.report_fit().unwrap();
        assert!(
            (covariance / variance - 1.0).abs() < 0.01,
            "{covariance} / {variance}"
        );

        // Latency unrelated to the report: a report too old to say anything.
        let stale = Load::new();
        for i in 0..2000 {
            stale.report(i, rng.u32(0..8) as f64);
            let latency = (2.0 * MILLISECOND as f64 * (1.0 + rng.u32(0..8) as f64)) as Nanos;
            stale.observe(i, latency, Outcome::Success, SECOND_TAU);
        }
        let (covariance, variance) = stale.report_fit().unwrap();
        assert!(
            (covariance / variance).abs() < 0.3,
            "{covariance} / {variance}"
        );
        assert_eq!(Load::new().report_fit(), None);
    }

    const SECOND_TAU: Nanos = crate::SECOND;
}
