//! Peak EWMA: the best of three random choices by expected latency × queue.
//!
//! Finagle's `p2cPeakEwma` (also linkerd2-proxy, via tower's `PeakEwma`)
//! draws two candidates and takes the cheaper; Fulcrum draws
//! [`CHOICES`] = 3 distinct candidates (Envoy's `choice_count` knob of its
//! least-request balancer, set to 3) and takes the cheapest, where
//!
//! ```text
//! cost = latency × (in_flight + 1) / effective_weight × (1 + k × error_rate)
//! ```
//!
//! * **latency** is the backend's peak-EWMA round-trip time
//!   ([`Load::latency_estimate`](crate::Load::latency_estimate)): a slow
//!   response raises it at once, fast ones lower it gradually. While the
//!   backend has nothing in flight it decays toward zero with τ =
//!   [`SelectorConfig::decay`] (Finagle's default 10 s), so a backend that
//!   was slow once is retried after a while rather than starved forever.
//!   While requests *are* in flight it does not decay: a backend that
//!   stopped answering (a stall) has no completions to lower its estimate,
//!   and decaying it anyway would make it look faster the longer it
//!   withholds answers;
//! * **in_flight + 1** is the queue this request would join: a fast backend
//!   with a long queue loses to a slower idle one, which is what keeps the
//!   fastest backend from being flooded (the Buoyant 2016 experiment: with a
//!   simulated 2 s GC pause, peak EWMA stayed fast up to p99.9 where
//!   round-robin degraded above p95);
//! * **effective_weight** lets operators (and slow start) bias the choice;
//! * **1 + k × error_rate** is the error penalty, k =
//!   [`SelectorConfig::error_penalty`] (default
//!   [`DEFAULT_ERROR_PENALTY`] = 100). Without it a backend that fails fast
//!   (a 503 in 1 ms) has the best latency and attracts ever more traffic —
//!   the "sinkhole" of the Google SRE book and the Prequal paper. The
//!   factor must exceed the ratio between a healthy and a fail-fast
//!   latency (often 10–100×) to make a backend failing most requests
//!   unattractive; with k = 100 a backend failing every request costs 101×
//!   a healthy one, and a single failure (error rate jumps by 1/8) costs
//!   about 13×, forgiven over τ as the rate decays.
//!
//! **Why three choices.** In the supermarket model (Mitzenmacher, TPDS 2001;
//! Poisson arrivals, exponential service, n → ∞) the mean time in system at
//! 90% load is 10 for one random choice, 2.61 for two and 2.03 for three,
//! and the tail falls doubly exponentially with the number of choices
//! (P(queue ≥ k) = λ^((dᵏ − 1)/(d − 1))). In the simulator (scenario S1,
//! 10 backends at 90% load, 10 seeds) two choices gave a p99 of 10.5 ms
//! against round-robin's 25.7 ms (2.4×), three give 9.2 ms (2.8×), close to
//! least-conn's full scan (8.0 ms); the heterogeneous and failure scenarios
//! improve too (S2b timeouts 0.18% → 0.02%, S3 fail-fast errors 0.28% →
//! 0.02%). A third choice still leaves a proxy many equally good targets, so
//! independent proxies do not herd onto one backend the way a global
//! minimum does, and it costs one more random draw and cost evaluation.
//!
//! **Backend-reported load.** When backends report their load (ORCA), the
//! candidates are drawn from [`ReportShares`] — routing probabilities that
//! fill the reported short queues first — instead of uniformly, and the
//! cheapest is taken as above. Many proxies reading one report then add up
//! to one router drawing with those probabilities instead of all herding
//! onto the backend that looked idle; reports too old to predict latency
//! are not used (see [`ReportShares`]). In the simulator (S5, 32 proxies,
//! reports 10–20 ms old) this cut timeouts from 7.3% to 0.7%.
//!
//! While candidates come from the report shares, only *fast* failures
//! (answers sooner than the backend's mean latency, see
//! [`Load::decayed_fast_error_rate`](crate::Load::decayed_fast_error_rate))
//! count in the error penalty and scale the shares. A timeout is a slow
//! failure: the backend's long queue shows in its report and prices it
//! already, and penalising it again for the ten seconds the error rate
//! takes to decay starves the backend long after its queue drained, which
//! overloads the others and makes more timeouts — a loop. In the simulator
//! it tipped half the seeds of a single proxy with 10 ms reports into a
//! lasting 55% of timeouts; with only fast failures counted no seed tips,
//! and S5 fell from p99 18.65 ms / 0.67% timeouts to 16.10 ms / 0.23%. A
//! fail-fast backend, which looks idle in its reports, is still avoided.
//!
//! A backend that has never answered is costed at the median latency of the
//! backends that have (computed when the selector is built, i.e. whenever
//! the membership changes), or [`DEFAULT_LATENCY`] when none has: a new
//! backend neither floods (cost 0) nor starves (cost ∞).

use std::fmt::Write as _;

use super::report_shares::ReportShares;
use super::sampling::uniform_candidate_except;
use super::{write_header, PickContext, Selector, SelectorConfig};
use crate::backend::{BackendId, BackendSet};
use crate::load::{decay_weight, DEFAULT_LATENCY};
use crate::Nanos;

/// Default of [`SelectorConfig::error_penalty`]: a backend failing every
/// request costs 101× a healthy one, more than the usual 10–100× latency gap
/// between a fail-fast error and a real response.
pub const DEFAULT_ERROR_PENALTY: f64 = 100.0;

/// Candidates drawn per pick: three (see the module docs for why).
pub const CHOICES: usize = 3;

/// Best of [`CHOICES`] random choices over peak-EWMA latency × (in-flight + 1).
#[derive(Debug)]
pub struct PeakEwma {
    decay: Nanos,
    error_penalty: f64,
    /// Latency assumed for a backend with no sample yet (nanoseconds).
    unknown_latency: f64,
    /// Mean configured weight of the enabled backends.
    mean_weight: f64,
    /// Where candidates are drawn from while backends report their load.
    shares: ReportShares,
}

impl PeakEwma {
    /// Builds the selector for `set`, taking the latency of backends without
    /// history from the median of those with one.
    pub fn new(set: &BackendSet, config: &SelectorConfig) -> Self {
        Self {
            decay: config.decay,
            error_penalty: config.error_penalty,
            unknown_latency: median_latency(set).unwrap_or(DEFAULT_LATENCY as f64),
            mean_weight: mean_weight(set),
            shares: ReportShares::new(set.len(), config.report_max_age),
        }
    }

    /// Latency per unit of reported utilisation of `id` at `now` (ns), over
    /// the relative weight: what the report shares price a backend's
    /// reported queue at.
    pub(super) fn unit_latency(&self, set: &BackendSet, id: BackendId, now: Nanos) -> f64 {
        let load = &set.get(id).state.load;
        let unit = load.latency_per_reported_unit().unwrap_or(f64::NAN);
        unit / (set.effective_weight(id, now) / self.mean_weight)
    }

    /// Expected latency of `id` at `now` (nanoseconds): the peak EWMA,
    /// decayed only while nothing is in flight, or — for a backend never
    /// heard from — the median of known backends, decaying from when it was
    /// first priced so it is eventually tried.
    #[inline]
    pub fn latency(&self, set: &BackendSet, id: BackendId, now: Nanos) -> f64 {
        let load = &set.get(id).state.load;
        match load.latency_estimate() {
            None if load.in_flight() > 0 => self.unknown_latency,
            None => {
                let since = load.unsampled_since(now);
                self.unknown_latency * decay_weight(now.saturating_sub(since), self.decay)
            }
            Some(latency) if load.in_flight() > 0 => latency,
            Some(_) => load.decayed_latency(now, self.decay),
        }
    }

    /// The penalty factor `1 + k × error_rate` of `id` at `now`.
    #[inline]
    pub fn error_factor(&self, set: &BackendSet, id: BackendId, now: Nanos) -> f64 {
        1.0 + self.error_penalty * set.get(id).state.load.decayed_error_rate(now, self.decay)
    }

    /// The error rate that counts against `id` at `now`: every failure, or
    /// while report shares are in force (`reported`) only the fast ones
    /// (see the module docs).
    #[inline]
    pub(super) fn penalised_error_rate(
        &self,
        set: &BackendSet,
        id: BackendId,
        now: Nanos,
        reported: bool,
    ) -> f64 {
        let load = &set.get(id).state.load;
        if reported {
            load.decayed_fast_error_rate(now, self.decay)
        } else {
            load.decayed_error_rate(now, self.decay)
        }
    }

    /// The cost of sending the request to `id` at `now` (lower is better).
    #[inline]
    pub fn cost(&self, set: &BackendSet, id: BackendId, now: Nanos) -> f64 {
        self.cost_by(set, id, now, false)
    }

    /// The cost of `id` at `now`, with only fast failures penalised when
    /// the candidates were drawn from report shares (`reported`).
    #[inline]
    fn cost_by(&self, set: &BackendSet, id: BackendId, now: Nanos, reported: bool) -> f64 {
        let in_flight = f64::from(set.get(id).state.load.in_flight());
        self.latency(set, id, now) * (in_flight + 1.0) / set.effective_weight(id, now)
            * (1.0 + self.error_penalty * self.penalised_error_rate(set, id, now, reported))
    }

    /// Draws up to [`CHOICES`] distinct candidates into a stack array;
    /// returns them, how many (0 when there is no candidate) and whether
    /// they were drawn from the report shares.
    fn choose(
        &self,
        set: &BackendSet,
        ctx: &mut PickContext<'_>,
    ) -> ([BackendId; CHOICES], usize, bool) {
        let mut drawn = [BackendId(0); CHOICES];
        let mut n = 0;
        let now = ctx.now;
        if self.shares.refresh(set, now, |id| {
            (
                self.unit_latency(set, id, now),
                self.penalised_error_rate(set, id, now, true),
            )
        }) {
            while n < CHOICES {
                match self.shares.draw(set, ctx) {
                    Some(id) => {
                        drawn[n] = id;
                        n += 1;
                    }
                    None => break,
                }
            }
            if n > 0 {
                return (drawn, n, true);
            }
        }
        while n < CHOICES {
            match uniform_candidate_except(set, ctx, &drawn[..n]) {
                Some(id) => {
                    drawn[n] = id;
                    n += 1;
                }
                None => break,
            }
        }
        (drawn, n, false)
    }

    /// The cheapest of `drawn` (the first drawn on ties); `reported`: they
    /// were drawn from the report shares.
    fn best(&self, set: &BackendSet, now: Nanos, drawn: &[BackendId], reported: bool) -> BackendId {
        let mut best = drawn[0];
        let mut best_cost = self.cost_by(set, best, now, reported);
        for &id in &drawn[1..] {
            let cost = self.cost_by(set, id, now, reported);
            if cost < best_cost {
                best = id;
                best_cost = cost;
            }
        }
        best
    }
}

/// The mean configured weight of the enabled backends (1 when none).
fn mean_weight(set: &BackendSet) -> f64 {
    let weights = set
        .backends()
        .iter()
        .filter(|b| b.admin == crate::backend::AdminState::Enabled && b.weight > 0)
        .map(|b| f64::from(b.weight));
    let (sum, n) = weights.fold((0.0, 0.0), |(s, n), w| (s + w, n + 1.0));
    if n > 0.0 {
        (sum / n).max(1.0)
    } else {
        1.0
    }
}

/// The median latency estimate of the backends that have one.
fn median_latency(set: &BackendSet) -> Option<f64> {
    let mut known: Vec<f64> = set
        .backends()
        .iter()
        .filter_map(|b| b.state.load.latency_estimate())
        .collect();
    if known.is_empty() {
        return None;
    }
    known.sort_by(f64::total_cmp);
    Some(known[known.len() / 2])
}

impl Selector for PeakEwma {
    fn name(&self) -> &'static str {
        "peak-ewma"
    }

    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let (drawn, n, reported) = self.choose(set, ctx);
        (n > 0).then(|| self.best(set, ctx.now, &drawn[..n], reported))
    }

    fn explain(
        &self,
        set: &BackendSet,
        ctx: &mut PickContext<'_>,
        out: &mut String,
    ) -> Option<BackendId> {
        let (drawn, n, reported) = self.choose(set, ctx);
        if n == 0 {
            write_header(out, self.name(), set, None);
            return None;
        }
        let now = ctx.now;
        let picked = self.best(set, now, &drawn[..n], reported);
        write_header(out, self.name(), set, Some(picked));
        for (k, &id) in drawn[..n].iter().enumerate() {
            let backend = set.get(id);
            let _ = write!(
                out,
                "{}{} cost={} latency={} in_flight={} error_rate={:.3}",
                if k == 0 { "; candidates=" } else { ", " },
                backend.address,
                Millis(self.cost_by(set, id, now, reported)),
                Millis(self.latency(set, id, now)),
                backend.state.load.in_flight(),
                backend.state.load.decayed_error_rate(now, self.decay),
            );
        }
        Some(picked)
    }
}

/// Formats nanoseconds as milliseconds with a precision that suits the size.
pub(crate) struct Millis(pub f64);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0 / 1e6;
        if ms >= 100.0 {
            write!(f, "{ms:.0}ms")
        } else if ms >= 1.0 {
            write!(f, "{ms:.1}ms")
        } else {
            write!(f, "{ms:.3}ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Outcome;
    use crate::selector::testing::set_with_weights;
    use crate::{MILLISECOND, SECOND};

    const TAU: Nanos = 10 * SECOND;

    /// Records one successful answer at `SECOND` for backends 0.. with
    /// these latencies in milliseconds.
    fn observe_ms(set: &BackendSet, latencies: &[u64]) {
        for (i, ms) in latencies.iter().enumerate() {
            let load = &set.get(BackendId(i as u32)).state.load;
            load.observe(SECOND, ms * MILLISECOND, Outcome::Success, TAU);
        }
    }

    fn picks_of(set: &BackendSet, sel: &PeakEwma, now: Nanos, n: usize) -> Vec<usize> {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut counts = vec![0; set.len()];
        for _ in 0..n {
            let mut ctx = PickContext::new(now, &mut rng);
            counts[sel.pick(set, &mut ctx).unwrap().index()] += 1;
        }
        counts
    }

    #[test]
    fn peak_ewma_prefers_the_faster_backend() {
        let set = set_with_weights(&[1, 1]);
        observe_ms(&set, &[5, 50]);
        let sel = PeakEwma::new(&set, &SelectorConfig::default());
        assert_eq!(picks_of(&set, &sel, SECOND, 100), [100, 0]);
    }

    #[test]
    fn peak_ewma_avoids_a_fail_fast_backend() {
        let set = set_with_weights(&[1, 1]);
        let fast_failing = &set.get(BackendId(0)).state.load;
        for i in 0..20 {
            fast_failing.observe(SECOND + i, MILLISECOND / 2, Outcome::Failure, TAU);
        }
        set.get(BackendId(1))
            .state
            .load
            .observe(SECOND, 20 * MILLISECOND, Outcome::Success, TAU);
        let sel = PeakEwma::new(&set, &SelectorConfig::default());
        assert_eq!(picks_of(&set, &sel, SECOND, 100), [0, 100]);
    }

    #[test]
    fn peak_ewma_weighs_the_queue() {
        let set = set_with_weights(&[1, 1]);
        observe_ms(&set, &[5, 20]);
        let _queue: Vec<_> = (0..9)
            .map(|_| set.get(BackendId(0)).state.load.start())
            .collect();
        // 5 ms × 10 = 50 against 20 ms × 1 = 20.
        let sel = PeakEwma::new(&set, &SelectorConfig::default());
        assert_eq!(picks_of(&set, &sel, SECOND, 100), [0, 100]);
    }

    #[test]
    fn peak_ewma_latency_does_not_decay_while_requests_wait() {
        let set = set_with_weights(&[1, 1]);
        let load = &set.get(BackendId(0)).state.load;
        load.observe(SECOND, 100 * MILLISECOND, Outcome::Success, TAU);
        let sel = PeakEwma::new(&set, &SelectorConfig::default());
        let later = SECOND + 3 * TAU;
        // Idle: forgiven with time, so it is tried again.
        assert!(sel.latency(&set, BackendId(0), later) < 10.0 * MILLISECOND as f64);
        // Stalled with a request waiting: still at least as slow as it was.
        let _waiting = load.start();
        assert_eq!(
            sel.latency(&set, BackendId(0), later),
            100.0 * MILLISECOND as f64
        );
    }

    #[test]
    fn peak_ewma_takes_the_cheapest_of_three() {
        // Three backends, one clearly cheapest: every pick draws all three.
        let set = set_with_weights(&[1, 1, 1]);
        observe_ms(&set, &[30, 5, 40]);
        let sel = PeakEwma::new(&set, &SelectorConfig::default());
        assert_eq!(picks_of(&set, &sel, SECOND, 100), [0, 100, 0]);
    }

    #[test]
    fn peak_ewma_costs_a_new_backend_at_the_median() {
        let set = set_with_weights(&[1, 1, 1, 1]);
        observe_ms(&set, &[2, 4, 100]);
        let sel = PeakEwma::new(&set, &SelectorConfig::default());
        assert_eq!(
            sel.latency(&set, BackendId(3), SECOND),
            4.0 * MILLISECOND as f64
        );
    }

    #[test]
    fn peak_ewma_eventually_tries_a_backend_never_heard_from() {
        // Two fast backends known at build time would price a newcomer at
        // their median forever; its default must decay so it gets tried.
        let set = set_with_weights(&[1, 1, 1]);
        let sel = PeakEwma::new(&set, &SelectorConfig::default());
        for i in 0..2 {
            let load = &set.get(BackendId(i)).state.load;
            load.observe(SECOND, MILLISECOND, Outcome::Success, TAU);
        }
        let mut rng = fastrand::Rng::with_seed(3);
        let mut picked_new = 0;
        for step in 0..400u64 {
            let now = SECOND + step * 100 * MILLISECOND;
            for i in 0..2 {
                let load = &set.get(BackendId(i)).state.load;
                load.observe(now, MILLISECOND, Outcome::Success, TAU);
            }
            let mut ctx = PickContext::new(now, &mut rng);
            picked_new += usize::from(sel.pick(&set, &mut ctx) == Some(BackendId(2)));
        }
        assert!(picked_new > 0, "the unsampled backend was never tried");
        assert!(picked_new < 200, "it is not flooded either: {picked_new}");
    }

    /// Two backends reporting this utilisation each at `SECOND`, with an
    /// answer of 1 ms recorded from both beforehand.
    fn reporting(utilisation: [f64; 2]) -> BackendSet {
        let set = set_with_weights(&[1, 1]);
        for (i, u) in utilisation.into_iter().enumerate() {
            let load = &set.get(BackendId(i as u32)).state.load;
            load.report(SECOND - MILLISECOND, u);
            load.observe(SECOND - MILLISECOND, MILLISECOND, Outcome::Success, TAU);
        }
        set
    }

    #[test]
    fn peak_ewma_with_reports_forgives_timeouts_once_the_queue_drained() {
        // Both backends went through a 20 ms queue; backend 0's requests
        // timed out (slow failures), backend 1's just made it. Both now
        // report an empty queue: backend 0 keeps its share rather than
        // being starved while its error rate decays over τ.
        let set = reporting([0.0, 0.0]);
        let load = &set.get(BackendId(0)).state.load;
        for i in 0..20 {
            load.observe(
                SECOND - MILLISECOND + i,
                20 * MILLISECOND,
                Outcome::Failure,
                TAU,
            );
        }
        let other = &set.get(BackendId(1)).state.load;
        for i in 0..20 {
            other.observe(
                SECOND - MILLISECOND + i,
                20 * MILLISECOND,
                Outcome::Success,
                TAU,
            );
        }
        let sel = PeakEwma::new(&set, &SelectorConfig::default());
        let counts = picks_of(&set, &sel, SECOND, 1000);
        assert!(counts[0] > 300, "{counts:?}");
    }

    #[test]
    fn peak_ewma_with_reports_still_avoids_a_fail_fast_backend() {
        // Backend 0 fails fast and so looks idle in its reports.
        let set = reporting([0.0, 2.0]);
        let load = &set.get(BackendId(0)).state.load;
        for i in 0..20 {
            load.observe(
                SECOND - MILLISECOND + i,
                MILLISECOND / 10,
                Outcome::Failure,
                TAU,
            );
        }
        let sel = PeakEwma::new(&set, &SelectorConfig::default());
        let counts = picks_of(&set, &sel, SECOND, 1000);
        assert!(counts[0] < 20, "{counts:?}");
    }

    #[test]
    fn peak_ewma_explains_its_choice() {
        let set = set_with_weights(&[1, 1]);
        observe_ms(&set, &[2, 30]);
        let sel = PeakEwma::new(&set, &SelectorConfig::default());
        let mut rng = fastrand::Rng::with_seed(1);
        let mut ctx = PickContext::new(SECOND, &mut rng);
        let mut out = String::new();
        assert_eq!(sel.explain(&set, &mut ctx, &mut out), Some(BackendId(0)));
        assert!(
            out.starts_with("peak-ewma; picked=b0; candidates="),
            "{out}"
        );
        assert!(
            out.contains("b0 cost=2.0ms") && out.contains("b1 cost=30.0ms"),
            "{out}"
        );
    }
}
