//! Health: one backend's health state machine, and a cluster's panic mode.
//!
//! A backend is *up* for the selectors when two independent verdicts agree:
//!
//! * **active probes** (HAProxy's `check`, Envoy's active health checking):
//!   the prober reports each result with [`BackendState::record_probe`]; `fall`
//!   consecutive failures mark the backend down, `rise` consecutive
//!   successes mark it up again. The streak hysteresis is what keeps a
//!   flapping backend from oscillating the cluster.
//! * **passive observations / outlier detection** (Envoy's
//!   `consecutive_5xx` / `consecutive_gateway_failure`): the request path
//!   reports every attempt with [`BackendState::record_outcome`]; after
//!   `consecutive_failures` failures in a row (5xx, connect failure, reset,
//!   timeout) the backend is *ejected* for `base_ejection × n`, where `n`
//!   counts its recent ejections, capped at `max_ejection`. The ejection
//!   count decays by one for every `base_ejection` without an ejection.
//!   When the ejection ends the backend returns **on probation** for one
//!   `base_ejection`: a single failure then ejects it again, for longer.
//!   At most `max_ejection_percent` of a cluster's backends are ejected at
//!   once (but always at least one may be, as in Envoy), so outlier
//!   detection never empties a cluster by itself.
//!
//! Probe health and ejection are kept apart (a passing probe does not end an
//! ejection early: a black-hole backend answers `/healthz` yet hangs real
//! requests) and both are kept apart from the operator's
//! [`AdminState`](crate::AdminState). Their conjunction drives the
//! [`BackendState`] healthy bit the selectors read, and a backend that comes
//! back restarts its slow-start ramp ([`BackendState::start_ramp`]).
//!
//! Nothing here reads a clock: `now` is passed in, and an ejection ends when
//! someone calls [`BackendState::tick_health`] after it expired (the proxy's
//! health supervisor does, ten times a second).
//!
//! **Panic mode** (Envoy's healthy panic threshold): when fewer than
//! `panic_threshold` percent of a cluster's enabled backends are healthy,
//! the few healthy ones would be crushed by the whole load. The snapshot then
//! ignores health and spreads over every enabled backend. The flag lives in
//! the [`BackendSet`] (so every selector honours it through
//! [`PickContext::is_candidate`](crate::PickContext::is_candidate) without
//! change); whoever changes a backend's health calls
//! [`BackendSet::refresh_panic`], which is O(backends) but runs only on a
//! transition, never per request.
//!
//! The hot path cost: a success is one relaxed load (plus a store when a
//! failure streak is broken); a failure is one `fetch_add`; the mutex is
//! taken only to probe, to eject and to end an ejection.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::backend::{BackendSet, BackendState};
use crate::load::Outcome;
use crate::{Nanos, SECOND};

/// Envoy's default `consecutive_5xx`: five failures in a row is rare for a
/// healthy backend (at a 1% error rate, one in ten billion sequences) yet
/// quick to reach for a broken one.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Envoy's default base ejection time, 30 s: long enough for a crashed
/// process to be restarted by its supervisor.
pub const DEFAULT_BASE_EJECTION: Nanos = 30 * SECOND;
/// Envoy's default cap on one ejection, 300 s: a backend that keeps failing
/// is still retried every five minutes.
pub const DEFAULT_MAX_EJECTION: Nanos = 300 * SECOND;
/// Envoy's default: at most 10% of a cluster ejected (but always one).
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// Envoy's default healthy panic threshold: below 50% healthy, spread the
/// load over everything rather than overload the survivors.
pub const DEFAULT_PANIC_THRESHOLD: u32 = 50;

/// A cluster's health thresholds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive probe successes that mark a down backend up.
    pub rise: u32,
    /// Consecutive probe failures that mark an up backend down.
    pub fall: u32,
    /// Consecutive failed requests that eject a backend; 0 turns outlier
    /// detection off.
    pub consecutive_failures: u32,
    /// First ejection length; the n-th recent ejection lasts n times this.
    pub base_ejection: Nanos,
    /// Longest single ejection.
    pub max_ejection: Nanos,
    /// Most of the cluster (percent of its backends) ejected at once; at
    /// least one backend may always be ejected.
    pub max_ejection_percent: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            rise: 2,
            fall: 2,
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

/// Why a backend's health verdict changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `fall` probes in a row failed.
    ProbesFailed(u32),
    /// `rise` probes in a row passed.
    ProbesPassed(u32),
    /// This many requests in a row failed (outlier detection).
    ConsecutiveFailures(u32),
    /// A request failed while the backend was on probation after an ejection.
    FailedOnProbation,
    /// The ejection time is over.
    EjectionEnded,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::ProbesFailed(n) => write!(f, "{n} health probes failed in a row"),
            Reason::ProbesPassed(n) => write!(f, "{n} health probes passed in a row"),
            Reason::ConsecutiveFailures(n) => {
                write!(f, "{n} requests failed in a row (outlier detection)")
            }
            Reason::FailedOnProbation => f.write_str("a request failed during probation"),
            Reason::EjectionEnded => f.write_str("ejection time over, on probation"),
        }
    }
}

/// A change of a backend's health, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The new verdict: whether the backend is now up.
    pub up: bool,
    /// Why.
    pub reason: Reason,
    /// For an ejection, how long it lasts.
    pub ejected_for: Option<Nanos>,
}

/// One backend's health state machine; lives in its [`BackendState`].
///
/// The counters are public atomics for metrics exporters.
#[derive(Debug, Default)]
pub struct Health {
    machine: Mutex<Machine>,
    /// Failed requests in a row (passive); reset by a success.
    passive_failures: AtomicU32,
    /// End of the probation window after an ejection ([`Nanos`], 0 = none).
    probation_until: AtomicU64,
    ejected: AtomicBool,
    probe_down: AtomicBool,
    /// Verdict changes (up → down and down → up) so far.
    pub transitions: AtomicU64,
    /// Outlier ejections so far.
    pub ejections: AtomicU64,
    /// Active probes run so far.
    pub probes: AtomicU64,
    /// Active probes failed so far.
    pub probe_failures: AtomicU64,
    /// Latency of the last active probe in nanoseconds.
    pub last_probe_latency: AtomicU64,
}

#[derive(Debug, Default)]
struct Machine {
    /// Consecutive probe results: > 0 successes, < 0 failures.
    streak: i64,
    /// When the current ejection ends, if ejected.
    ejected_until: Option<Nanos>,
    /// Recent ejections (the multiplier of the next one).
    ejection_count: u32,
    /// When `ejection_count` was last raised or decayed.
    count_changed_at: Nanos,
}

impl Health {
    /// A backend with no history: up.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether active probes currently consider the backend up.
    pub fn probe_up(&self) -> bool {
        !self.probe_down.load(Ordering::Relaxed)
    }

    /// Whether outlier detection currently ejects the backend.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Whether both verdicts agree the backend is up.
    pub fn is_up(&self) -> bool {
        self.probe_up() && !self.is_ejected()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BackendState {
    /// Feeds one active probe result. Returns the transition if the verdict
    /// changed; the healthy bit and slow start are already updated.
    pub fn record_probe(
        &self,
        ok: bool,
        latency: Nanos,
        now: Nanos,
        policy: &HealthPolicy,
    ) -> Option<Transition> {
        let h = &self.health;
        h.probes.fetch_add(1, Ordering::Relaxed);
        h.last_probe_latency.store(latency, Ordering::Relaxed);
        if !ok {
            h.probe_failures.fetch_add(1, Ordering::Relaxed);
        }
        let mut m = h.lock();
        let was_up = h.is_up();
        m.streak = match (ok, m.streak) {
            (true, s) if s > 0 => s.saturating_add(1),
            (true, _) => 1,
            (false, s) if s < 0 => s.saturating_sub(1),
            (false, _) => -1,
        };
        let reason = if h.probe_up() && m.streak <= -i64::from(policy.fall.max(1)) {
            h.probe_down.store(true, Ordering::Relaxed);
            Reason::ProbesFailed(policy.fall)
        } else if !h.probe_up() && m.streak >= i64::from(policy.rise.max(1)) {
            h.probe_down.store(false, Ordering::Relaxed);
            Reason::ProbesPassed(policy.rise)
        } else {
            return None;
        };
        self.settle(was_up, reason, None, now)
    }

    /// Feeds the outcome of one request attempt (passive health). Returns
    /// the transition if the backend was ejected. `set` is the cluster's
    /// snapshot, used to honour `max_ejection_percent`.
    #[inline]
    pub fn record_outcome(
        &self,
        outcome: Outcome,
        now: Nanos,
        policy: &HealthPolicy,
        set: &BackendSet,
    ) -> Option<Transition> {
        let h = &self.health;
        if policy.consecutive_failures == 0 {
            return None;
        }
        if outcome == Outcome::Success {
            if h.passive_failures.load(Ordering::Relaxed) != 0 {
                h.passive_failures.store(0, Ordering::Relaxed);
            }
            return None;
        }
        let failures = h.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let probation = now < h.probation_until.load(Ordering::Relaxed);
        if failures < policy.consecutive_failures && !probation {
            return None;
        }
        self.eject(failures, probation, now, policy, set)
    }

    #[cold]
    fn eject(
        &self,
        failures: u32,
        probation: bool,
        now: Nanos,
        policy: &HealthPolicy,
        set: &BackendSet,
    ) -> Option<Transition> {
        let h = &self.health;
        let mut m = h.lock();
        // Start counting afresh whatever happens: a refused ejection is
        // retried after another full streak, not on every failure.
        h.passive_failures.store(0, Ordering::Relaxed);
        if h.is_ejected() {
            return None;
        }
        let ejected_now = set
            .backends()
            .iter()
            .filter(|b| b.state.health.is_ejected())
            .count();
        let allowed = (set.len() * policy.max_ejection_percent.min(100) as usize / 100).max(1);
        if ejected_now >= allowed {
            return None;
        }
        let was_up = h.is_up();
        m.ejection_count = m.ejection_count.saturating_add(1);
        m.count_changed_at = now;
        let length = policy
            .base_ejection
            .saturating_mul(u64::from(m.ejection_count))
            .min(policy.max_ejection.max(policy.base_ejection));
        m.ejected_until = Some(now.saturating_add(length));
        h.ejected.store(true, Ordering::Relaxed);
        h.probation_until.store(0, Ordering::Relaxed);
        h.ejections.fetch_add(1, Ordering::Relaxed);
        let reason = if probation {
            Reason::FailedOnProbation
        } else {
            Reason::ConsecutiveFailures(failures)
        };
        self.settle(was_up, reason, Some(length), now)
            .or(Some(Transition {
                // Already down by probes: the ejection is still news.
                up: false,
                reason,
                ejected_for: Some(length),
            }))
    }

    /// Ends an expired ejection and decays the ejection count. Call it
    /// periodically (the proxy does ten times a second).
    pub fn tick_health(&self, now: Nanos, policy: &HealthPolicy) -> Option<Transition> {
        let h = &self.health;
        if !h.is_ejected() && h.probation_until.load(Ordering::Relaxed) == 0 {
            // Fast path: nothing to expire. The count decays lazily below
            // only when there is one.
            let m = h.lock();
            if m.ejection_count == 0 {
                return None;
            }
            drop(m);
        }
        let mut m = h.lock();
        if let Some(until) = m.ejected_until {
            if now < until {
                return None;
            }
            let was_up = h.is_up();
            m.ejected_until = None;
            m.count_changed_at = now;
            h.ejected.store(false, Ordering::Relaxed);
            h.passive_failures.store(0, Ordering::Relaxed);
            h.probation_until.store(
                now.saturating_add(policy.base_ejection).max(1),
                Ordering::Relaxed,
            );
            return self.settle(was_up, Reason::EjectionEnded, None, now);
        }
        if now >= h.probation_until.load(Ordering::Relaxed) {
            h.probation_until.store(0, Ordering::Relaxed);
        }
        if m.ejection_count > 0 && now.saturating_sub(m.count_changed_at) >= policy.base_ejection {
            m.ejection_count -= 1;
            m.count_changed_at = now;
        }
        None
    }

    /// Forgets the active-probe verdict (marks it up), e.g. when health
    /// checking is turned off for the backend's cluster.
    pub fn clear_probe_verdict(&self, now: Nanos) -> Option<Transition> {
        let h = &self.health;
        let mut m = h.lock();
        m.streak = 0;
        if h.probe_up() {
            return None;
        }
        let was_up = h.is_up();
        h.probe_down.store(false, Ordering::Relaxed);
        self.settle(was_up, Reason::ProbesPassed(0), None, now)
    }

    /// Recent ejections: the multiplier of the next ejection's length.
    pub fn ejection_count(&self) -> u32 {
        self.health.lock().ejection_count
    }

    /// Publishes the verdict after a state change (called with the machine
    /// locked, so concurrent changes publish in order).
    fn settle(
        &self,
        was_up: bool,
        reason: Reason,
        ejected_for: Option<Nanos>,
        now: Nanos,
    ) -> Option<Transition> {
        let up = self.health.is_up();
        if up == was_up {
            return None;
        }
        self.set_healthy(up);
        if up {
            self.start_ramp(now);
        }
        self.health.transitions.fetch_add(1, Ordering::Relaxed);
        Some(Transition {
            up,
            reason,
            ejected_for,
        })
    }
}

/// A change of a cluster's panic mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PanicChange {
    /// Whether the cluster is now in panic mode.
    pub active: bool,
    /// Healthy enabled backends.
    pub healthy: usize,
    /// Enabled backends.
    pub enabled: usize,
}

impl BackendSet {
    /// Recomputes panic mode from the backends' health bits; returns the
    /// change, if any. Call it after any health transition in this set.
    pub fn refresh_panic(&self) -> Option<PanicChange> {
        let threshold = self.panic_threshold();
        let (mut healthy, mut enabled) = (0usize, 0usize);
        for b in self.backends() {
            if b.is_enabled() {
                enabled += 1;
                healthy += usize::from(b.state.is_healthy());
            }
        }
        let active = threshold > 0 && enabled > 0 && healthy * 100 < enabled * threshold as usize;
        let was = self.panic_flag().swap(active, Ordering::Relaxed);
        (was != active).then_some(PanicChange {
            active,
            healthy,
            enabled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::selector::PickContext;
    use crate::{BackendId, MILLISECOND};

    fn policy() -> HealthPolicy {
        HealthPolicy {
            rise: 2,
            fall: 3,
            consecutive_failures: 3,
            base_ejection: SECOND,
            max_ejection: 3 * SECOND,
            max_ejection_percent: 10,
        }
    }

    fn set(n: usize) -> BackendSet {
        BackendSet::new((0..n).map(|i| Backend::new(format!("b{i}"), 1)).collect())
    }

    #[test]
    fn probes_need_fall_failures_to_mark_down_and_rise_successes_to_mark_up() {
        let p = policy();
        let s = BackendState::new();
        let t = 10 * SECOND;
        assert_eq!(s.record_probe(false, 1, t, &p), None);
        assert_eq!(s.record_probe(false, 1, t, &p), None);
        assert!(s.is_healthy(), "two of three failures keep it up");
        let down = s.record_probe(false, 1, t, &p).expect("third failure");
        assert!(!down.up);
        assert_eq!(down.reason, Reason::ProbesFailed(3));
        assert!(!s.is_healthy());
        assert_eq!(s.record_probe(true, 1, t + 1, &p), None);
        assert!(!s.is_healthy(), "one success is not enough");
        let up = s.record_probe(true, 1, t + 2, &p).expect("rise");
        assert!(up.up);
        assert!(s.is_healthy());
        assert_eq!(s.ramp_since(), Some(t + 2), "recovery restarts slow start");
        assert_eq!(s.health.transitions.load(Ordering::Relaxed), 2);
        assert_eq!(s.health.probes.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn alternating_probes_never_flip_the_verdict() {
        let p = policy();
        let s = BackendState::new();
        for i in 0..100 {
            assert_eq!(s.record_probe(i % 2 == 0, 1, i, &p), None);
        }
        assert!(s.is_healthy());
        assert_eq!(s.health.transitions.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_capped_time() {
        let p = policy();
        let set = set(3);
        let s = &set.backends()[0].state;
        let mut now = SECOND;
        let fail = |now| s.record_outcome(Outcome::Failure, now, &p, &set);
        assert_eq!(fail(now), None);
        assert_eq!(fail(now), None);
        let t = fail(now).expect("third failure ejects");
        assert_eq!(t.reason, Reason::ConsecutiveFailures(3));
        assert_eq!(t.ejected_for, Some(SECOND));
        assert!(!s.is_healthy());
        // A passing probe does not end an ejection.
        s.record_probe(true, 1, now, &p);
        assert!(!s.is_healthy());
        assert_eq!(s.tick_health(now + SECOND - 1, &p), None);
        now += SECOND;
        let back = s.tick_health(now, &p).expect("ejection ends");
        assert_eq!(back.reason, Reason::EjectionEnded);
        assert!(s.is_healthy());
        assert_eq!(s.ramp_since(), Some(now));
        // On probation one failure is enough, and the ejection is longer.
        let again = fail(now + MILLISECOND).expect("probation failure ejects");
        assert_eq!(again.reason, Reason::FailedOnProbation);
        assert_eq!(again.ejected_for, Some(2 * SECOND));
        now += 2 * SECOND + MILLISECOND;
        s.tick_health(now, &p).expect("ends");
        let third = fail(now).expect("probation again");
        assert_eq!(third.ejected_for, Some(3 * SECOND));
        now += 3 * SECOND;
        s.tick_health(now, &p).expect("ends");
        let fourth = fail(now).expect("probation again");
        assert_eq!(
            fourth.ejected_for,
            Some(3 * SECOND),
            "capped at max_ejection"
        );
        assert_eq!(s.health.ejections.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn probation_passes_and_the_ejection_count_decays() {
        let p = policy();
        let set = set(3);
        let s = &set.backends()[0].state;
        for _ in 0..3 {
            s.record_outcome(Outcome::Failure, 0, &p, &set);
        }
        assert!(!s.is_healthy());
        s.tick_health(SECOND, &p).expect("ends");
        // Successes during probation keep it in.
        for i in 0..10 {
            assert_eq!(
                s.record_outcome(Outcome::Success, SECOND + i, &p, &set),
                None
            );
        }
        s.tick_health(2 * SECOND, &p);
        s.tick_health(3 * SECOND, &p);
        assert_eq!(s.ejection_count(), 0, "decays by one per base_ejection");
        // Past probation, a single failure no longer ejects.
        assert_eq!(
            s.record_outcome(Outcome::Failure, 3 * SECOND, &p, &set),
            None
        );
        assert!(s.is_healthy());
    }

    #[test]
    fn successes_break_a_failure_streak() {
        let p = policy();
        let set = set(3);
        let s = &set.backends()[0].state;
        for i in 0..30 {
            let outcome = if i % 3 == 2 {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            assert_eq!(s.record_outcome(outcome, i, &p, &set), None);
        }
        assert!(s.is_healthy());
    }

    #[test]
    fn max_ejection_percent_keeps_most_of_the_cluster() {
        let mut p = policy();
        p.max_ejection_percent = 50;
        let set = set(5);
        let mut ejected = 0;
        for b in set.backends() {
            for _ in 0..3 {
                if b.state
                    .record_outcome(Outcome::Failure, 0, &p, &set)
                    .is_some()
                {
                    ejected += 1;
                }
            }
        }
        assert_eq!(ejected, 2, "50% of 5 backends");
        // The default 10% still lets one of three go.
        let p = policy();
        let set = self::set(3);
        let mut ejected = 0;
        for b in set.backends() {
            for _ in 0..3 {
                ejected += usize::from(
                    b.state
                        .record_outcome(Outcome::Failure, 0, &p, &set)
                        .is_some(),
                );
            }
        }
        assert_eq!(ejected, 1);
    }

    #[test]
    fn outlier_detection_can_be_turned_off() {
        let mut p = policy();
        p.consecutive_failures = 0;
        let set = set(1);
        for _ in 0..100 {
            assert_eq!(
                set.backends()[0]
                    .state
                    .record_outcome(Outcome::Failure, 0, &p, &set),
                None
            );
        }
        assert!(set.backends()[0].state.is_healthy());
    }

    #[test]
    fn panic_mode_spreads_over_all_enabled_backends() {
        let p = policy();
        let set = set(4).with_panic_threshold(50);
        assert!(!set.in_panic());
        for b in &set.backends()[..2] {
            for _ in 0..3 {
                b.state.record_probe(false, 1, 0, &p);
            }
        }
        // 2 of 4 healthy is exactly the threshold: no panic.
        assert_eq!(set.refresh_panic(), None);
        let ctx_rng = &mut fastrand::Rng::with_seed(1);
        let ctx = PickContext::new(0, ctx_rng);
        assert!(!ctx.is_candidate(&set, BackendId(0)));
        for _ in 0..3 {
            set.backends()[2].state.record_probe(false, 1, 0, &p);
        }
        let change = set.refresh_panic().expect("1 of 4 is below 50%");
        assert!(change.active);
        assert_eq!((change.healthy, change.enabled), (1, 4));
        assert!(set.in_panic());
        assert!(
            ctx.is_candidate(&set, BackendId(0)),
            "health ignored in panic"
        );
        for _ in 0..2 {
            set.backends()[2].state.record_probe(true, 1, 1, &p);
        }
        assert!(!set.refresh_panic().expect("recovered").active);
        assert!(!ctx.is_candidate(&set, BackendId(0)));
    }

    #[test]
    fn a_draining_backend_is_drained_once_nothing_is_in_flight() {
        let mut b = Backend::new("b0", 1);
        b.admin = crate::AdminState::Draining;
        let guard = b.state.load.start();
        assert!(!b.is_usable());
        assert!(!b.is_drained(), "a request is still in flight");
        drop(guard);
        assert!(b.is_drained());
        assert!(
            !Backend::new("b1", 1).is_drained(),
            "enabled is never drained"
        );
    }

    #[test]
    fn a_request_out_of_healthy_backends_falls_back_to_enabled_ones() {
        // The soak's burst: b0 healthy (dead, not yet noticed), b1 draining,
        // b2 ejected but alive. One healthy of two enabled is exactly 50%:
        // no panic. A retry after b0 refused must still find b2.
        use crate::selector::{pick_or_fall_back, SelectorConfig};
        use crate::{AdminState, Algorithm};
        let p = policy();
        for threshold in [50, 0] {
            let mut backends: Vec<Backend> =
                (0..3).map(|i| Backend::new(format!("b{i}"), 1)).collect();
            backends[1].admin = AdminState::Draining;
            for _ in 0..p.consecutive_failures {
                let set = BackendSet::new(backends.clone());
                backends[2]
                    .state
                    .record_outcome(Outcome::Failure, 0, &p, &set);
            }
            assert!(backends[2].state.health.is_ejected());
            let set = BackendSet::new(backends).with_panic_threshold(threshold);
            assert!(!set.in_panic());
            for algorithm in Algorithm::ALL {
                let selector = algorithm.build(&set, &SelectorConfig::default());
                let mut rng = fastrand::Rng::with_seed(7);
                for _ in 0..20 {
                    let mut ctx = PickContext::new(MILLISECOND, &mut rng);
                    assert_eq!(
                        pick_or_fall_back(selector.as_ref(), &set, &mut ctx, None),
                        Some(BackendId(0)),
                        "{algorithm}: a healthy backend is left, no fallback"
                    );
                    let tried = [BackendId(0)];
                    ctx.exclude = &tried;
                    assert_eq!(selector.pick(&set, &mut ctx), None, "{algorithm}");
                    let mut trail = String::new();
                    let picked =
                        pick_or_fall_back(selector.as_ref(), &set, &mut ctx, Some(&mut trail));
                    assert!(!ctx.ignore_health, "the fallback is for one pick");
                    if threshold == 0 {
                        assert_eq!(picked, None, "{algorithm}: never panic means never");
                    } else {
                        assert_eq!(
                            picked,
                            Some(BackendId(2)),
                            "{algorithm}: the ejected backend, never the draining one"
                        );
                        assert!(trail.contains("health ignored"), "{trail}");
                    }
                }
            }
        }
    }

    #[test]
    fn panic_threshold_zero_never_panics() {
        let p = policy();
        let set = set(2).with_panic_threshold(0);
        for b in set.backends() {
            for _ in 0..3 {
                b.state.record_probe(false, 1, 0, &p);
            }
        }
        assert_eq!(set.refresh_panic(), None);
        assert!(!set.in_panic());
    }
}
