//! Report shares: routing probabilities from backends' own load reports,
//! filled like water so that many proxies reading the same report do not
//! herd.
//!
//! **The problem.** When backends report their load (ORCA, see
//! [`Load::report`]), every proxy in front of them sees the same numbers,
//! and they are old by the time they are read. A proxy that sends each
//! request to the backend that *looked* least loaded sends it to the same
//! backend as every other proxy: with 32 proxies and reports 100 ms old,
//! "least reported load" timed out 69% of the requests in scenario S5.
//!
//! **The idea.** Instead of a choice, every proxy turns the report into the
//! same *probabilities* and draws from them. Independent draws by all proxies
//! add up to one router drawing with those probabilities (the thinning of a
//! Poisson stream), so the aggregate sends each backend its share — no herd
//! — while the shares still lean towards the backends that had short queues.
//!
//! **The shares.** For each backend `i` the report gives `u_i`, its
//! utilisation (for the simulator and a FCFS server: requests held per
//! worker). A request sent there should expect `s_i × (1 + u_i)`, with
//! `s_i` the latency per unit of utilisation
//! ([`Load::latency_per_reported_unit`], learned from the proxy's own
//! completions), over the relative weight. Over a
//! horizon `T` the cluster receives `A = λ × T` requests (λ estimated from
//! the same report as `Σ min(u_i, 1) / s_i`, the rate at which the busy
//! backends complete work). Backend `i` gets
//!
//! ```text
//! a_i = max(0, (X + T) / s_i − (1 + u_i))        with Σ a_i = A
//! ```
//!
//! of them (what it completes over `T`, plus a queue worth `X`, less what
//! it holds), scaled by `1 − error rate` so a backend failing fast does not
//! collect traffic by looking idle (the caller passes the rate of fast
//! failures only: a timed-out backend's queue is in its report already). The water level `X` is the wait every
//! backend that gets requests reaches once they are spread, so the shares `p_i = a_i / A`
//! send nothing to a backend whose reported queue is already above the
//! level, and fill the short queues first, in proportion to their speed. A
//! long horizon spreads the requests by capacity alone (`a_i → T / s_i`);
//! a short one fills the reported gaps. `T` is the time over which one
//! report is used: the smoothed spacing between reports plus the mean age
//! of the readings when the table is computed (since they arrived), at
//! least [`MIN_HORIZON`].
//!
//! **Stale reports.** How much a report says about the queue a request
//! will meet depends on its age, which the proxy does not know (a report
//! sampled 100 ms ago and delivered now looks as fresh as one sampled now).
//! So the proxy measures it: over its own completions it regresses the
//! latency on `1 + u` reported meanwhile ([`Load::report_fit`]), pooled over
//! the backends. The slope relative to `s_i` — the *trust*, clamped to
//! 0..=1 — is about 1 when latency follows the report and 0 when the report
//! is too old to say anything; each reading is shrunk towards the mean
//! utilisation by it (`u' = ū + trust × (u − ū)`, the best linear guess of
//! the queue from the report). Below [`MIN_TRUST`] the table is not used at
//! all and the selector draws as it does without reports. In the simulator
//! (S5) reports 10–20 ms old measure a trust of 0.6–0.75, 100–110 ms old
//! 0–0.06.
//!
//! **Use.** [`PeakEwma`](super::PeakEwma) draws its three candidates from
//! the shares instead of uniformly while a table is in force, then takes
//! the cheapest by its own cost (latency × (in flight + 1) × error
//! penalty), so what this proxy alone knows still counts.
//!
//! **Cost.** The table is recomputed at most every [`REFRESH`] of `now` and
//! only when a newer report arrived (while no backend has reported at all,
//! the common case of backends that send no reports, the scan for reports
//! runs only every [`IDLE_REFRESH`]) — a bisection for the level, 40 × O(n)
//! — into preallocated atomics; a draw is one binary search over cumulative
//! shares. No allocation after construction. Two tables alternate so that
//! a draw never reads a table being written (a reader would have to
//! outlive two recomputations, a millisecond or more, to see a mix; it
//! would still draw a backend).
//!
//! [`Load::report`]: crate::Load::report
//! [`Load::latency_per_reported_unit`]: crate::Load::latency_per_reported_unit
//! [`Load::report_fit`]: crate::Load::report_fit

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::PickContext;
use crate::backend::{AdminState, BackendId, BackendSet};
use crate::load::DEFAULT_LATENCY;
use crate::Nanos;

/// Least time between two recomputations of the table: 1 ms. Reports arrive
/// every few to hundreds of milliseconds (ORCA's out-of-band default is
/// 10 s; per-response reports arrive with every answer), and the table
/// only needs to follow them; 1 ms bounds the cost under per-response
/// reports at many thousands of requests per second.
pub const REFRESH: Nanos = crate::MILLISECOND;

/// Least time between two scans for reports while the last scan found
/// none: 100 ms. The scan reads every backend, so at 10 000 backends a
/// scan per [`REFRESH`] would read ten million values a second for
/// clusters whose backends send no reports; reports that start arriving
/// are used within this delay instead of within 1 ms.
pub const IDLE_REFRESH: Nanos = 100 * crate::MILLISECOND;

/// Shortest horizon a report is used over: 1 ms. With reports arriving
/// continuously (one per response) the spacing between them says nothing
/// about how long one is used; the mean age of the readings then sets the
/// horizon, and this floor keeps it from collapsing to "fill the shortest
/// reported queue".
pub const MIN_HORIZON: Nanos = crate::MILLISECOND;

/// Weight of a new observation in the estimates of the report spacing and
/// of the cluster's arrival rate: 1/8, about eight reports of memory.
const SMOOTHING: f64 = 1.0 / 8.0;

/// Least trust (see [`Load::report_fit`](crate::Load::report_fit)) for the table to be used: 0.25.
/// Below it the shares are close to plain capacity shares, which in the
/// simulator (S5, reports 100 ms old, trust measured at 0–0.06) did worse
/// than the uniform draws the selector makes without reports (9.7% against
/// 7.2% timeouts, 10 seeds); reports 10–20 ms old measure 0.6–0.75.
const MIN_TRUST: f64 = 0.25;

/// Bisection steps for the water level: 2⁻⁴⁰ of the bracket, far below a
/// nanosecond.
const BISECTIONS: usize = 40;

/// Routing shares computed from the backends' load reports.
#[derive(Debug)]
pub struct ReportShares {
    max_age: Nanos,
    /// Two tables of cumulative shares per set index (f64 bits); the live
    /// one is named by `live`.
    tables: [Box<[AtomicU64]>; 2],
    /// 0: no table (no fresh report); 1 or 2: table 0 or 1 is live.
    live: AtomicUsize,
    /// Newest report time the live table reflects.
    epoch: AtomicU64,
    /// When the reports were last scanned.
    checked_at: AtomicU64,
    /// The last scan found no report: the next is [`IDLE_REFRESH`] later.
    idle: AtomicBool,
    /// A recomputation is under way.
    busy: AtomicBool,
    /// Smoothed spacing between new reports (ns, f64 bits); NaN before two.
    spacing: AtomicU64,
    /// Smoothed arrival rate of the cluster (requests per ns, f64 bits); NaN before one.
    rate: AtomicU64,
}

/// What a table is computed from, per backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Reading {
    /// Reported utilisation, or `None` when the backend did not report.
    pub(crate) utilisation: Option<f64>,
    /// Latency per unit of utilisation, penalties and weight included (ns).
    pub(crate) unit_latency: f64,
    /// Recent error rate, 0..=1: the share is scaled by `1 − error_rate`.
    pub(crate) error_rate: f64,
}

impl ReportShares {
    /// An empty table for a set of `n` backends.
    pub fn new(n: usize, max_age: Nanos) -> Self {
        let table = || (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        Self {
            max_age,
            tables: [table(), table()],
            live: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            checked_at: AtomicU64::new(0),
            idle: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            spacing: AtomicU64::new(f64::NAN.to_bits()),
            rate: AtomicU64::new(f64::NAN.to_bits()),
        }
    }

    /// Brings the table up to date with the reports at `now` (at most every
    /// [`REFRESH`], or [`IDLE_REFRESH`] after a scan found no report) and
    /// says whether it is usable. `unit_latency(id)` gives
    /// a backend's latency per unit of utilisation with its penalties.
    pub fn refresh(
        &self,
        set: &BackendSet,
        now: Nanos,
        reading: impl Fn(BackendId) -> (f64, f64),
    ) -> bool {
        let checked = self.checked_at.load(Ordering::Relaxed);
        let period = if self.idle.load(Ordering::Relaxed) {
            IDLE_REFRESH
        } else {
            REFRESH
        };
        if now.saturating_sub(checked) < period && checked != 0 {
            return self.live.load(Ordering::Acquire) != 0;
        }
        if self
            .busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return self.live.load(Ordering::Acquire) != 0;
        }
        self.checked_at.store(now.max(1), Ordering::Relaxed);
        self.recompute(set, now, reading);
        self.busy.store(false, Ordering::Release);
        self.live.load(Ordering::Acquire) != 0
    }

    fn recompute(&self, set: &BackendSet, now: Nanos, reading: impl Fn(BackendId) -> (f64, f64)) {
        let n = set.len().min(self.tables[0].len());
        let mut newest = 0;
        let mut reported = 0usize;
        let mut age_sum = 0.0;
        let (mut covariance, mut variance) = (0.0, 0.0);
        for (i, b) in set.backends()[..n].iter().enumerate() {
            if let Some((_, at)) = b.state.load.report_reading(now, self.max_age) {
                if set.is_usable(BackendId(i as u32)) {
                    newest = newest.max(at);
                    reported += 1;
                    age_sum += now.saturating_sub(at) as f64;
                    if let Some((c, v)) = b.state.load.report_fit() {
                        covariance += c;
                        variance += v;
                    }
                }
            }
        }
        self.idle.store(reported == 0, Ordering::Relaxed);
        let trust = if variance > 0.0 {
            (covariance / variance).clamp(0.0, 1.0)
        } else {
            1.0
        };
        if trust < MIN_TRUST {
            self.live.store(0, Ordering::Release);
            return;
        }
        if reported == 0 {
            self.live.store(0, Ordering::Release);
            return;
        }
        let epoch = self.epoch.load(Ordering::Relaxed);
        if newest == epoch && self.live.load(Ordering::Relaxed) != 0 {
            return;
        }
        if epoch != 0 && newest > epoch {
            blend(&self.spacing, (newest - epoch) as f64);
        }
        self.epoch.store(newest, Ordering::Relaxed);
        let spacing = f64::from_bits(self.spacing.load(Ordering::Relaxed));
        let spacing = if spacing.is_nan() { 0.0 } else { spacing };
        let horizon = (spacing + age_sum / reported as f64).max(MIN_HORIZON as f64);

        let next = match self.live.load(Ordering::Relaxed) {
            1 => 1,
            _ => 0,
        };
        let table = &self.tables[next][..n];
        let readings = set.backends()[..n].iter().enumerate().map(|(i, b)| {
            let id = BackendId(i as u32);
            let usable = b.admin == AdminState::Enabled && b.weight > 0 && set.is_usable(id);
            usable.then(|| {
                let (unit_latency, error_rate) = reading(id);
                Reading {
                    utilisation: b.state.load.reported(now, self.max_age),
                    unit_latency,
                    error_rate,
                }
            })
        });
        if water_fill(readings, horizon, trust, &self.rate, table).is_some() {
            self.live.store(next + 1, Ordering::Release);
        } else {
            self.live.store(0, Ordering::Release);
        }
    }

    /// Draws a candidate by the live table, or `None` when there is no
    /// table or a few draws found no candidate (the caller then draws
    /// uniformly).
    #[inline]
    pub fn draw(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let live = self.live.load(Ordering::Acquire);
        if live == 0 {
            return None;
        }
        let table = &self.tables[live - 1];
        let n = set.len().min(table.len());
        for _ in 0..4 {
            let x = ctx.rng.f64();
            let (mut lo, mut hi) = (0, n);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if f64::from_bits(table[mid].load(Ordering::Relaxed)) <= x {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo < n {
                let id = BackendId(lo as u32);
                if ctx.is_candidate(set, id) {
                    return Some(id);
                }
            }
        }
        None
    }

    /// The share of backend `id` in the live table (for explanations and
    /// tests), `None` without a table.
    pub fn share(&self, id: BackendId) -> Option<f64> {
        let live = self.live.load(Ordering::Acquire);
        if live == 0 || id.index() >= self.tables[0].len() {
            return None;
        }
        let table = &self.tables[live - 1];
        let at = |k: usize| f64::from_bits(table[k].load(Ordering::Relaxed));
        let before = if id.index() == 0 {
            0.0
        } else {
            at(id.index() - 1)
        };
        Some(at(id.index()) - before)
    }
}

fn blend(a: &AtomicU64, sample: f64) {
    let old = f64::from_bits(a.load(Ordering::Relaxed));
    let new = if old.is_nan() {
        sample
    } else {
        old + (sample - old) * SMOOTHING
    };
    a.store(new.to_bits(), Ordering::Relaxed);
}

/// Fills `out` with cumulative water-filling shares (f64 bits) for the
/// backends read by `readings` (`None`: not a candidate, share 0) over
/// `horizon` ns, updating the smoothed arrival `rate`; returns the rate
/// used, or `None` when no backend can take a share.
///
/// Backends without a report are assumed at the mean reported utilisation;
/// a non-positive or non-finite latency is replaced by [`DEFAULT_LATENCY`].
pub(crate) fn water_fill(
    readings: impl Iterator<Item = Option<Reading>> + Clone,
    horizon: f64,
    trust: f64,
    rate: &AtomicU64,
    out: &[AtomicU64],
) -> Option<f64> {
    // A backend whose latency per unit is not known yet is priced at the
    // mean of those known (not at a default that may be ten times off,
    // which would starve it of the very answers that teach it).
    let known = |r: &Reading| r.unit_latency.is_finite() && r.unit_latency > 0.0;
    let (mut known_sum, mut known_n) = (0.0, 0.0);
    for r in readings.clone().flatten().filter(known) {
        known_sum += r.unit_latency;
        known_n += 1.0;
    }
    let fallback = if known_n > 0.0 {
        known_sum / known_n
    } else {
        DEFAULT_LATENCY as f64
    };
    let unit = |r: &Reading| {
        if known(r) {
            r.unit_latency
        } else {
            fallback
        }
    };
    // Mean reported utilisation, for backends that did not report.
    let (mut sum, mut count) = (0.0, 0.0);
    for r in readings.clone().flatten() {
        if let Some(u) = r.utilisation {
            sum += u;
            count += 1.0;
        }
    }
    let mean_u = if count > 0.0 { sum / count } else { 0.0 };
    let queue = |r: &Reading| {
        let u = r.utilisation.unwrap_or(mean_u).max(0.0);
        1.0 + mean_u + trust * (u - mean_u)
    };

    // λ from this report: the busy backends complete 1 / s_i per ns each.
    let mut throughput = 0.0;
    for r in readings.clone().flatten() {
        throughput += (queue(&r) - 1.0).min(1.0) / unit(&r);
    }
    blend(rate, throughput);
    let lambda = f64::from_bits(rate.load(Ordering::Relaxed));
    let arrivals = (lambda * horizon).max(1.0);

    // Requests backend `i` takes when the water reaches `level` (ns): what
    // it completes over the horizon, plus enough that a request joining at
    // the end waits `level`, less what it already holds. Linear and
    // increasing in the level, so a bisection finds where the cluster's
    // arrivals are all placed.
    let take = |r: &Reading, level: f64| {
        let s = unit(r);
        ((level + horizon) / s - queue(r)).max(0.0)
    };
    let taken = |level: f64| -> f64 { readings.clone().flatten().map(|r| take(&r, level)).sum() };
    let mut level = 0.0;
    if taken(0.0) < arrivals {
        let mut high = DEFAULT_LATENCY as f64;
        let mut doublings = 0;
        while taken(high) < arrivals {
            high *= 2.0;
            doublings += 1;
            if doublings > 64 {
                return None;
            }
        }
        let mut low = 0.0;
        for _ in 0..BISECTIONS {
            let mid = 0.5 * (low + high);
            if taken(mid) < arrivals {
                low = mid;
            } else {
                high = mid;
            }
        }
        level = high;
    }
    // Shares, then cumulative.
    let mut total = 0.0;
    for (slot, r) in out.iter().zip(readings) {
        let a = match r {
            Some(r) => take(&r, level) * (1.0 - r.error_rate).clamp(0.0, 1.0),
            None => 0.0,
        };
        total += a;
        slot.store(total.to_bits(), Ordering::Relaxed);
    }
    if total <= 0.0 || !total.is_finite() {
        return None;
    }
    for slot in out {
        let c = f64::from_bits(slot.load(Ordering::Relaxed)) / total;
        slot.store(c.to_bits(), Ordering::Relaxed);
    }
    Some(lambda)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::testing::set_with_weights;
    use crate::{MILLISECOND, SECOND};

    fn reading(utilisation: f64, unit_ms: f64) -> Option<Reading> {
        Some(Reading {
            utilisation: Some(utilisation),
            unit_latency: unit_ms * MILLISECOND as f64,
            error_rate: 0.0,
        })
    }

    /// Shares (not cumulative) from a water-filling over `readings`.
    fn shares(readings: &[Option<Reading>], horizon: Nanos, trust: f64) -> Vec<f64> {
        let out: Vec<AtomicU64> = readings.iter().map(|_| AtomicU64::new(0)).collect();
        let rate = AtomicU64::new(f64::NAN.to_bits());
        water_fill(readings.iter().copied(), horizon as f64, trust, &rate, &out)
            .expect("a share for someone");
        let cumulative: Vec<f64> = out
            .iter()
            .map(|a| f64::from_bits(a.load(Ordering::Relaxed)))
            .collect();
        (0..cumulative.len())
            .map(|i| cumulative[i] - if i == 0 { 0.0 } else { cumulative[i - 1] })
            .collect()
    }

    #[test]
    fn report_shares_fill_the_short_queues_first() {
        // Four equal backends, all busy; over 2 ms the cluster gets about
        // 8 requests: the queue of 10 is above the level and gets nothing.
        let s = shares(
            &[
                reading(1.0, 1.0),
                reading(2.0, 1.0),
                reading(3.0, 1.0),
                reading(10.0, 1.0),
            ],
            2 * MILLISECOND,
            1.0,
        );
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{s:?}");
        assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
        assert_eq!(s[3], 0.0, "{s:?}");
        // Equal steps in the queue are equal steps in the share.
        assert!(((s[0] - s[1]) - (s[1] - s[2])).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn report_shares_follow_capacity_when_the_report_is_not_trusted() {
        // One backend three times slower; queues as uneven as above. Without
        // trust in the report the queues are taken as equal and the shares
        // go by speed: 3 : 3 : 1.
        let s = shares(
            &[reading(0.0, 1.0), reading(9.0, 1.0), reading(0.0, 3.0)],
            100 * MILLISECOND,
            0.0,
        );
        assert!((s[0] - s[1]).abs() < 1e-9, "{s:?}");
        assert!(s[0] / s[2] > 2.5 && s[0] / s[2] < 3.5, "{s:?}");
    }

    #[test]
    fn report_shares_skip_non_candidates_and_fill_unreported_at_the_mean() {
        let s = shares(
            &[
                reading(2.0, 1.0),
                None,
                Some(Reading {
                    utilisation: None,
                    unit_latency: f64::NAN,
                    error_rate: 0.0,
                }),
                reading(2.0, 1.0),
            ],
            5 * MILLISECOND,
            1.0,
        );
        assert_eq!(s[1], 0.0);
        assert!(
            (s[0] - s[2]).abs() < 1e-9 && (s[2] - s[3]).abs() < 1e-9,
            "{s:?}"
        );
    }

    #[test]
    fn report_shares_shrink_with_the_error_rate() {
        let mut failing = reading(0.0, 1.0).unwrap();
        failing.error_rate = 0.9;
        let s = shares(&[Some(failing), reading(0.0, 1.0)], 10 * MILLISECOND, 1.0);
        assert!(s[0] < 0.15 && s[1] > 0.85, "{s:?}");
    }

    #[test]
    fn report_shares_need_a_fresh_report() {
        let set = set_with_weights(&[1, 1]);
        let shares = ReportShares::new(set.len(), SECOND);
        assert!(!shares.refresh(&set, SECOND, |_| (MILLISECOND as f64, 0.0)));
        set.get(BackendId(0)).state.load.report(SECOND, 1.0);
        set.get(BackendId(1)).state.load.report(SECOND, 1.0);
        // The scan found no report, so the next one is IDLE_REFRESH later.
        assert!(!shares.refresh(&set, SECOND + REFRESH, |_| (MILLISECOND as f64, 0.0)));
        assert!(shares.refresh(&set, SECOND + IDLE_REFRESH, |_| (MILLISECOND as f64, 0.0)));
        // Two seconds on, the report is older than max_age: no table.
        assert!(!shares.refresh(&set, 3 * SECOND, |_| (MILLISECOND as f64, 0.0)));
        let mut rng = fastrand::Rng::with_seed(1);
        let mut ctx = PickContext::new(3 * SECOND, &mut rng);
        assert_eq!(shares.draw(&set, &mut ctx), None);
    }

    #[test]
    fn report_shares_draws_add_up_to_the_shares_without_herding() {
        // Many proxies reading one report draw independently; together they
        // send each backend its share, not everything to the least loaded.
        let set = set_with_weights(&[1, 1, 1, 1]);
        for (i, u) in [0.0, 1.0, 2.0, 4.0].into_iter().enumerate() {
            set.get(BackendId(i as u32)).state.load.report(SECOND, u);
        }
        let proxies: Vec<ReportShares> = (0..8)
            .map(|_| ReportShares::new(set.len(), SECOND))
            .collect();
        let mut counts = [0usize; 4];
        let mut rng = fastrand::Rng::with_seed(7);
        for k in 0..16_000 {
            let p = &proxies[k % proxies.len()];
            assert!(p.refresh(&set, SECOND, |_| (MILLISECOND as f64, 0.0)));
            let mut ctx = PickContext::new(SECOND, &mut rng);
            counts[p.draw(&set, &mut ctx).unwrap().index()] += 1;
        }
        let expected: Vec<f64> = (0..4)
            .map(|i| proxies[0].share(BackendId(i)).unwrap())
            .collect();
        for i in 0..4 {
            let got = counts[i] as f64 / 16_000.0;
            assert!(
                (got - expected[i]).abs() < 0.02,
                "{counts:?} vs {expected:?}"
            );
        }
        assert!(
            counts[0] < 12_000,
            "the least loaded must not take nearly all: {counts:?}"
        );
        assert!(counts[0] > counts[1] && counts[1] > counts[2], "{counts:?}");
    }

    #[test]
    fn report_shares_draw_only_candidates() {
        let set = crate::selector::testing::disable(set_with_weights(&[1, 1]), 0);
        set.get(BackendId(0)).state.load.report(SECOND, 0.0);
        set.get(BackendId(1)).state.load.report(SECOND, 5.0);
        let shares = ReportShares::new(set.len(), SECOND);
        assert!(shares.refresh(&set, SECOND, |_| (MILLISECOND as f64, 0.0)));
        assert_eq!(shares.share(BackendId(0)), Some(0.0));
        let mut rng = fastrand::Rng::with_seed(2);
        for _ in 0..100 {
            let mut ctx = PickContext::new(SECOND, &mut rng);
            assert_eq!(shares.draw(&set, &mut ctx), Some(BackendId(1)));
        }
    }
}
