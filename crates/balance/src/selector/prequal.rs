//! Prequal: probe pool + hot-cold lexicographic rule (Wydrowski et al.,
//! "Load is not what you should balance: Introducing Prequal", NSDI 2024).
//!
//! Prequal balances *latency and requests in flight (RIF)*, not CPU. In the
//! paper clients send asynchronous probes to random servers; each answer
//! `(RIF, latency estimate)` goes into a small pool that later queries reuse.
//! A query then applies the **hot-cold lexicographic (HCL) rule**: a probe is
//! *hot* when its RIF reaches the `Q_RIF` quantile of the RIFs in the pool
//! (and is not the pool's least);
//! among the *cold* probes take the lowest latency; if every probe were hot,
//! take the lowest RIF. At YouTube it halved tail latency against weighted
//! round-robin on CPU utilisation.
//!
//! Fulcrum has no probe RPC (yet): a *probe* reads the local [`Load`] view
//! of a backend, which is exact for this proxy and free. RIF is divided by
//! the backend's effective weight relative to the mean weight, so weights
//! and slow start bias the rule.
//!
//! **Backend-reported load.** When backends report their utilisation
//! (ORCA, [`Load::report`]), the probes are drawn from [`ReportShares`] —
//! the routing probabilities every proxy computes alike from the shared
//! reports, used only while the reports are measured to predict latency —
//! instead of by weight, exactly as [`PeakEwma`](super::PeakEwma) draws its
//! candidates; the HCL rule still runs on the local view. An earlier
//! version scaled each probe's RIF by the report instead,
//! `rif = (in_flight + 1) × (1 + utilisation) − 1`, and herded: every proxy
//! read the same stale report, found the same backend coldest and sent it
//! the next request. In the simulator (S5: 32 proxies, 10 seeds, p99 /
//! timeouts) that was 20 ms / 14.7% with reports 10–20 ms old and
//! 20 ms / 88.9% with reports 100–110 ms old, against 14.78 ms / 0.11%
//! without reports; drawing from the shares gives 14.21 ms / 0.06% and
//! 14.62 ms / 0.10%. Counting only fast failures in the error penalty while
//! the shares are in force, as peak-ewma does, measured 13.65 ms / 0.06%
//! and 15.07 ms / 0.14% (worse than no reports with 100 ms reports), so
//! prequal keeps its error penalty as it is.
//!
//! The latency estimate is what the paper asks of a probe — the latency a
//! request sent *now* should expect — not a memory of past requests: the
//! backend's latency per request in flight ([`Load::latency_per_request`],
//! per-completion averages of latency over in-flight count, Little's law)
//! × (RIF + 1), with the same error penalty as [`PeakEwma`](super::PeakEwma)
//! so a fail-fast backend does not look fast and cold (the paper's "error
//! aversion" against sinkholing). It is computed when a probe is used, so a
//! reused probe's estimate grows with the RIF it counts up.
//!
//! An earlier version used the decayed peak EWMA here and herded: at 1 ms
//! service times a 10 s τ keeps the peak of the last ten thousand requests,
//! so backends that went idle kept the latency of an old burst while busy
//! ones looked faster, and two backends tied at the top RIF stayed "cold"
//! under the strict `> quantile` rule and took turns taking every request
//! (S1 at 90% load: p50 5.4 s against round-robin's 3.8 ms). Hence also the
//! `≥` in the rule below.
//!
//! The pool mechanics follow the paper:
//!
//! * each pick takes [`SelectorConfig::prequal_probes`] probes (default 3,
//!   the paper's r_probe; 2–3 is "ideal") of random candidates drawn by
//!   effective weight (or from the report shares, above), and stores them
//!   in a pool of [`POOL_SIZE`] = 16; a probe of a backend already pooled
//!   refreshes its entry;
//! * an entry expires after [`SelectorConfig::prequal_max_age`] (default
//!   1 s — our choice: local probes are refreshed several times per pick, so
//!   only a quiet cluster keeps entries that long) or after
//!   `b_reuse = 1 + 1 / ((1 − m/n)·r_probe − r_remove)` uses (the paper's
//!   reuse budget with δ = 1 and r_remove = 1; unbounded when the pool can
//!   hold every backend, m ≥ n, where expiry and refreshes keep it current);
//!   each use adds one to the entry's RIF, as the request it sent will;
//! * when the pool is full a new probe replaces, alternately, the oldest
//!   entry and the worst (hottest) one, so the pool neither fills with hot
//!   backends nor keeps stale ones.
//!
//! `Q_RIF` defaults to the paper's **0.84** ([`DEFAULT_Q_RIF`]). prequal-rs
//! uses 0.6 because 0.84 "herded onto few replicas at high load" in its
//! simulation; the recommended range is 0.6–0.9. It is configurable
//! ([`SelectorConfig::prequal_q_rif`]) so the simulator can compare.
//!
//! **Concurrency.** `pick` takes `&self` and must be lock-free, so the pool
//! is a fixed array of atomics. An entry is three words (backend and uses;
//! RIF and latency as two `f32`s; time) written as "clear, write, publish"
//! and read with a re-check of the first word, so a reader never mixes two
//! backends' readings. Concurrent picks may evict the same slot or overshoot
//! a reuse budget by one; like the races in [`Load`], that costs accuracy
//! by at most one probe and never correctness (the pick is still a
//! candidate). If no pooled entry is usable for this request (all excluded
//! or just evicted by another thread), the cheapest fresh probe is taken.
//!
//! [`Load`]: crate::Load
//! [`Load::report`]: crate::Load::report
//! [`Load::latency_per_request`]: crate::Load::latency_per_request

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::peak_ewma::{Millis, PeakEwma};
use super::report_shares::ReportShares;
use super::weight_table::WeightTable;
use super::{write_header, PickContext, Selector, SelectorConfig};
use crate::backend::{AdminState, BackendId, BackendSet};
use crate::Nanos;

/// Probe pool size: the paper's 16.
pub const POOL_SIZE: usize = 16;

/// The paper's default hot/cold quantile.
pub const DEFAULT_Q_RIF: f64 = 0.84;

/// Probes per pick: the paper's r_probe ≈ 3.
pub const DEFAULT_PROBES: u32 = 3;

/// Most probes per pick accepted from the configuration (each costs a few
/// atomic reads and a pool scan).
pub const MAX_PROBES: u32 = 8;

/// Default probe expiry: 1 s.
pub const DEFAULT_MAX_AGE: Nanos = crate::SECOND;

/// One pooled probe.
#[derive(Debug, Default)]
struct Slot {
    /// `(backend id + 1) << 32 | uses`; 0 = empty.
    meta: AtomicU64,
    /// `rif as f32 bits << 32 | latency per request in flight (ns) as f32 bits`.
    sample: AtomicU64,
    /// When the probe was taken.
    at: AtomicU64,
}

/// A consistent reading of one slot.
#[derive(Clone, Copy, Debug)]
struct Probe {
    slot: usize,
    id: BackendId,
    uses: u32,
    rif: f32,
    /// Latency per request in flight (ns), error penalty included; see
    /// [`expected_latency`].
    latency: f32,
    at: Nanos,
}

impl Slot {
    fn read(&self, slot: usize) -> Option<Probe> {
        let meta = self.meta.load(Ordering::Acquire);
        if meta == 0 {
            return None;
        }
        let sample = self.sample.load(Ordering::Acquire);
        let at = self.at.load(Ordering::Acquire);
        if self.meta.load(Ordering::Acquire) >> 32 != meta >> 32 {
            return None; // rewritten while we read
        }
        Some(Probe {
            slot,
            id: BackendId(((meta >> 32) - 1) as u32),
            uses: meta as u32,
            rif: f32::from_bits((sample >> 32) as u32),
            latency: f32::from_bits(sample as u32),
            at,
        })
    }

    fn write(&self, id: BackendId, rif: f32, latency: f32, at: Nanos) {
        self.meta.store(0, Ordering::Release);
        self.sample.store(pack(rif, latency), Ordering::Release);
        self.at.store(at, Ordering::Release);
        self.meta
            .store((u64::from(id.0) + 1) << 32, Ordering::Release);
    }
}

/// The latency a probe predicts for one more request: its latency per
/// request in flight × (RIF + 1).
fn expected_latency(p: &Probe) -> f32 {
    p.latency * (p.rif.max(0.0) + 1.0)
}

/// The value of rank `round((m − 1) × q)` among `values` (m ≤ 16), by
/// counting ranks: cheaper than sorting at this size, and allocation-free.
fn quantile(values: &[f32], q: f64) -> f32 {
    let rank = ((values.len().saturating_sub(1)) as f64 * q).round() as usize;
    for &v in values {
        let below = values.iter().filter(|&&w| w < v).count();
        let at_most = values.iter().filter(|&&w| w <= v).count();
        if below <= rank && rank < at_most {
            return v;
        }
    }
    f32::INFINITY
}

/// Whether a probe with `rif` is hot, given the pool's `threshold` and `least` RIF.
fn is_hot(rif: f32, threshold: f32, least: f32) -> bool {
    rif >= threshold && rif > least
}

fn pack(rif: f32, latency: f32) -> u64 {
    (u64::from(rif.to_bits()) << 32) | u64::from(latency.to_bits())
}

/// Prequal over a pool of local probes.
#[derive(Debug)]
pub struct Prequal {
    costs: PeakEwma,
    table: WeightTable,
    mean_weight: f64,
    q_rif: f64,
    probes: u32,
    max_age: Nanos,
    reuse_budget: u32,
    pool: [Slot; POOL_SIZE],
    /// Where probes are drawn from while backends report their load.
    shares: ReportShares,
    /// Alternates eviction between oldest and worst.
    turn: AtomicU64,
}

impl Prequal {
    /// Builds the selector (and an empty pool) for `set`.
    pub fn new(set: &BackendSet, config: &SelectorConfig) -> Self {
        let weights: Vec<f64> = set
            .backends()
            .iter()
            .filter(|b| b.admin == AdminState::Enabled && b.weight > 0)
            .map(|b| f64::from(b.weight))
            .collect();
        let n = weights.len().max(1) as f64;
        let mean_weight = (weights.iter().sum::<f64>() / n).max(1.0);
        let probes = config.prequal_probes.clamp(1, MAX_PROBES);
        let denominator = (1.0 - POOL_SIZE as f64 / n) * f64::from(probes) - 1.0;
        let reuse_budget = if denominator > 0.0 {
            (1.0 + 1.0 / denominator).round() as u32
        } else {
            u32::MAX
        };
        Self {
            costs: PeakEwma::new(set, config),
            table: WeightTable::new(set),
            mean_weight,
            q_rif: config.prequal_q_rif.clamp(0.0, 1.0),
            probes,
            max_age: config.prequal_max_age,
            reuse_budget,
            pool: Default::default(),
            shares: ReportShares::new(set.len(), config.report_max_age),
            turn: AtomicU64::new(0),
        }
    }

    /// The reuse budget in force (uses per probe; `u32::MAX` = unbounded).
    pub fn reuse_budget(&self) -> u32 {
        self.reuse_budget
    }

    /// Probes `id` now: (RIF per relative weight, latency per request in
    /// flight with the error penalty). The latency a request should expect
    /// there is `per_request × (rif + 1)` ([`expected_latency`]), computed
    /// when the probe is used so that it follows the RIF a reused probe has
    /// counted up.
    fn probe(&self, set: &BackendSet, id: BackendId, now: Nanos) -> (f32, f32) {
        let load = &set.get(id).state.load;
        let rif = f64::from(load.in_flight()) / (set.effective_weight(id, now) / self.mean_weight);
        let per_request = load
            .latency_per_request()
            .unwrap_or_else(|| self.costs.latency(set, id, now));
        let per_request = per_request * self.costs.error_factor(set, id, now);
        (rif as f32, per_request as f32)
    }

    /// Puts a fresh probe of `id` in the pool.
    fn store(&self, id: BackendId, rif: f32, latency: f32, now: Nanos) {
        let mut target = None;
        let mut oldest = (u64::MAX, 0);
        let mut worst = (f32::NEG_INFINITY, 0);
        for (k, slot) in self.pool.iter().enumerate() {
            match slot.read(k) {
                Some(p) if p.id == id => {
                    target = Some(k);
                    break;
                }
                Some(p) if !self.expired(&p, now) => {
                    if p.at < oldest.0 {
                        oldest = (p.at, k);
                    }
                    if p.rif > worst.0 {
                        worst = (p.rif, k);
                    }
                }
                _ => target = target.or(Some(k)),
            }
        }
        let k = target.unwrap_or_else(|| {
            if self.turn.fetch_add(1, Ordering::Relaxed) & 1 == 0 {
                oldest.1
            } else {
                worst.1
            }
        });
        self.pool[k].write(id, rif, latency, now);
    }

    fn expired(&self, p: &Probe, now: Nanos) -> bool {
        now.saturating_sub(p.at) > self.max_age || p.uses >= self.reuse_budget
    }

    /// Takes this pick's probes — drawn from the report shares while they
    /// are in force, else by effective weight — and returns the cheapest
    /// one by the HCL order as a fallback, or `None` when there is no
    /// candidate at all.
    fn refresh(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let now = ctx.now;
        let reported = self.shares.refresh(set, now, |id| {
            (
                self.costs.unit_latency(set, id, now),
                self.costs.penalised_error_rate(set, id, now, true),
            )
        });
        let mut fallback: Option<(BackendId, f32, f32)> = None;
        for _ in 0..self.probes {
            let id = match reported.then(|| self.shares.draw(set, ctx)).flatten() {
                Some(id) => id,
                None => self.table.draw(set, ctx)?,
            };
            let (rif, per_request) = self.probe(set, id, now);
            self.store(id, rif, per_request, now);
            let latency = per_request * (rif.max(0.0) + 1.0);
            match fallback {
                Some((_, r, l)) if (r, l) <= (rif, latency) => {}
                _ => fallback = Some((id, rif, latency)),
            }
        }
        fallback.map(|(id, _, _)| id)
    }

    /// The usable pooled probes for this request, in a stack array.
    fn usable(
        &self,
        set: &BackendSet,
        ctx: &PickContext<'_>,
    ) -> ([Option<Probe>; POOL_SIZE], usize) {
        let mut out = [None; POOL_SIZE];
        let mut m = 0;
        for (k, slot) in self.pool.iter().enumerate() {
            if let Some(p) = slot.read(k) {
                if !self.expired(&p, ctx.now)
                    && p.id.index() < set.len()
                    && ctx.is_candidate(set, p.id)
                {
                    out[m] = Some(p);
                    m += 1;
                }
            }
        }
        (out, m)
    }

    /// The HCL rule over `probes`: the hot threshold and the chosen probe.
    ///
    /// A probe is hot when its RIF reaches the `Q_RIF` quantile of the
    /// pool's RIFs, unless it is the pool's least loaded (so a pool of equal
    /// RIFs is all cold). "Reaches", not "exceeds": in a pool of ten the
    /// 0.84 quantile is the second largest RIF, and with "exceeds" two
    /// backends tied at the top stay cold, take turns and herd the traffic
    /// between them.
    fn hot_cold(&self, probes: &[Option<Probe>]) -> (f32, Option<Probe>) {
        let mut rifs = [0f32; POOL_SIZE];
        let m = probes.len();
        for (r, p) in rifs.iter_mut().zip(probes.iter().flatten()) {
            *r = p.rif;
        }
        let threshold = quantile(&rifs[..m], self.q_rif);
        let least = rifs[..m].iter().copied().fold(f32::INFINITY, f32::min);
        let probes = probes.iter().flatten();
        let cold = probes
            .clone()
            .filter(|p| !is_hot(p.rif, threshold, least))
            .min_by(|a, b| {
                expected_latency(a)
                    .total_cmp(&expected_latency(b))
                    .then(a.rif.total_cmp(&b.rif))
            });
        let chosen = cold.or_else(|| probes.min_by(|a, b| a.rif.total_cmp(&b.rif)));
        (threshold, chosen.copied())
    }

    /// Records a use of the chosen probe: one more use, one more request in flight.
    fn use_probe(&self, p: &Probe) {
        let slot = &self.pool[p.slot];
        let meta = slot.meta.load(Ordering::Relaxed);
        if meta >> 32 == u64::from(p.id.0) + 1 {
            let _ = slot
                .meta
                .compare_exchange(meta, meta + 1, Ordering::AcqRel, Ordering::Relaxed);
            let _ = slot.sample.compare_exchange(
                pack(p.rif, p.latency),
                pack(p.rif + 1.0, p.latency),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }
}

impl Selector for Prequal {
    fn name(&self) -> &'static str {
        "prequal"
    }

    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let fallback = self.refresh(set, ctx)?;
        let (probes, m) = self.usable(set, ctx);
        if m == 0 {
            return Some(fallback);
        }
        match self.hot_cold(&probes[..m]).1 {
            Some(p) => {
                self.use_probe(&p);
                Some(p.id)
            }
            None => Some(fallback),
        }
    }

    fn explain(
        &self,
        set: &BackendSet,
        ctx: &mut PickContext<'_>,
        out: &mut String,
    ) -> Option<BackendId> {
        let Some(fallback) = self.refresh(set, ctx) else {
            write_header(out, self.name(), set, None);
            return None;
        };
        let (probes, m) = self.usable(set, ctx);
        let (threshold, chosen) = if m == 0 {
            (0.0, None)
        } else {
            self.hot_cold(&probes[..m])
        };
        let least = probes[..m]
            .iter()
            .flatten()
            .map(|p| p.rif)
            .fold(f32::INFINITY, f32::min);
        let picked = chosen.map_or(fallback, |p| p.id);
        if let Some(p) = &chosen {
            self.use_probe(p);
        }
        write_header(out, self.name(), set, Some(picked));
        let _ = write!(out, "; hot_rif>={threshold:.2}");
        for (k, p) in probes[..m].iter().flatten().enumerate() {
            let _ = write!(
                out,
                "{}{} rif={:.2} latency={} {}",
                if k == 0 { "; candidates=" } else { ", " },
                set.get(p.id).address,
                p.rif,
                Millis(f64::from(expected_latency(p))),
                if is_hot(p.rif, threshold, least) {
                    "hot"
                } else {
                    "cold"
                },
            );
        }
        Some(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Outcome;
    use crate::selector::testing::set_with_weights;
    use crate::{MILLISECOND, SECOND};

    const TAU: Nanos = 10 * SECOND;

    #[test]
    fn prequal_prefers_cold_fast_backends() {
        let set = set_with_weights(&[1; 4]);
        for (i, ms) in [5, 50, 50, 50].into_iter().enumerate() {
            let load = &set.get(BackendId(i as u32)).state.load;
            load.observe(SECOND, ms * MILLISECOND, Outcome::Success, TAU);
        }
        let sel = Prequal::new(&set, &SelectorConfig::default());
        let mut rng = fastrand::Rng::with_seed(5);
        let mut fast = 0;
        for i in 0..100 {
            let mut ctx = PickContext::new(SECOND + i, &mut rng);
            fast += usize::from(sel.pick(&set, &mut ctx) == Some(BackendId(0)));
        }
        // These picks send nothing, but a pooled probe counts each use as a
        // request in flight until it is refreshed, so right after a use the
        // fast backend is the pool's hottest; it still takes most picks
        // (the slow ones share the rest).
        assert!(fast > 50, "{fast}");
    }

    #[test]
    fn prequal_avoids_hot_backends_even_when_fast() {
        let set = set_with_weights(&[1; 8]);
        for i in 0..8 {
            let ms = if i == 0 { 1 } else { 20 };
            let load = &set.get(BackendId(i)).state.load;
            load.observe(SECOND, ms * MILLISECOND, Outcome::Success, TAU);
        }
        // The fast backend is far above everyone else's RIF: hot.
        let _queue: Vec<_> = (0..50)
            .map(|_| set.get(BackendId(0)).state.load.start())
            .collect();
        let sel = Prequal::new(&set, &SelectorConfig::default());
        let mut rng = fastrand::Rng::with_seed(5);
        let mut hot = 0;
        for i in 0..200 {
            let mut ctx = PickContext::new(SECOND + i, &mut rng);
            hot += usize::from(sel.pick(&set, &mut ctx) == Some(BackendId(0)));
        }
        assert!(hot < 10, "{hot}");
    }

    /// The simulator's S1 collapse (p50 of seconds) in miniature: backends
    /// that went idle keep the latency of an old peak, the two busy ones
    /// report less, and requests pile onto the busy pair while nothing
    /// completes. Each pick holds its in-flight guard, as a real request
    /// does until it is answered.
    #[test]
    fn prequal_does_not_herd_onto_backends_that_looked_fast() {
        let set = set_with_weights(&[1; 10]);
        for i in 0..10 {
            let ms = if i < 8 { 200 } else { 20 };
            let load = &set.get(BackendId(i)).state.load;
            load.observe(SECOND, ms * MILLISECOND, Outcome::Success, TAU);
        }
        let sel = Prequal::new(&set, &SelectorConfig::default());
        let mut rng = fastrand::Rng::with_seed(7);
        let mut guards = Vec::new();
        for i in 0..1000 {
            let mut ctx = PickContext::new(2 * SECOND + i * MILLISECOND, &mut rng);
            let id = sel.pick(&set, &mut ctx).unwrap();
            guards.push(set.get(id).state.load.start());
        }
        let in_flight: Vec<u32> = (0..10)
            .map(|i| set.get(BackendId(i)).state.load.in_flight())
            .collect();
        let max = *in_flight.iter().max().unwrap();
        // A fair share is 100; the queue must count before the latency does.
        assert!(max <= 150, "herded: {in_flight:?}");
    }

    /// 32 proxies read the same report, in which backend 0 looked idle and
    /// the nine others busy, and send ten requests each. When a probe's RIF
    /// was scaled by the reported utilisation, backend 0 was each proxy's
    /// coldest probe until its own uses counted up, and took 75 of the 320
    /// requests, 2.3× a fair share (the S5 herd: in the simulator the
    /// report is 10–20 ms old, and by the time the requests arrive backend
    /// 0 is the busiest). Drawn from the report shares, the probes lean
    /// towards a backend only by its share (24 of 320 here).
    #[test]
    fn prequal_proxies_sharing_a_stale_report_do_not_herd_onto_the_idle_backend() {
        let mut to_idle = 0;
        for proxy in 0..32 {
            let set = set_with_weights(&[1; 10]);
            for i in 0..10 {
                let load = &set.get(BackendId(i)).state.load;
                load.report(SECOND - MILLISECOND, if i == 0 { 0.0 } else { 1.0 });
                load.observe(SECOND - MILLISECOND, MILLISECOND, Outcome::Success, TAU);
            }
            let sel = Prequal::new(&set, &SelectorConfig::default());
            let mut rng = fastrand::Rng::with_seed(proxy);
            for i in 0..10 {
                let mut ctx = PickContext::new(SECOND + i * 10_000, &mut rng);
                to_idle += usize::from(sel.pick(&set, &mut ctx) == Some(BackendId(0)));
            }
            assert!(sel.shares.share(BackendId(0)).is_some(), "shares in force");
        }
        // A fair share is 32.
        assert!(
            to_idle < 48,
            "{to_idle} of 320 requests to the idle backend"
        );
    }

    #[test]
    fn prequal_reuse_budget_follows_the_paper() {
        let small = set_with_weights(&[1; 8]);
        assert_eq!(
            Prequal::new(&small, &SelectorConfig::default()).reuse_budget(),
            u32::MAX
        );
        // n = 100: 1 + 1 / (0.84 × 3 − 1) ≈ 1.66 → 2.
        let large = set_with_weights(&[1; 100]);
        assert_eq!(
            Prequal::new(&large, &SelectorConfig::default()).reuse_budget(),
            2
        );
    }

    #[test]
    fn prequal_quantile_matches_a_sorted_rank() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..200 {
            let m = rng.usize(1..=POOL_SIZE);
            let values: Vec<f32> = (0..m).map(|_| rng.u32(0..6) as f32).collect();
            let mut sorted = values.clone();
            sorted.sort_by(f32::total_cmp);
            for q in [0.0, 0.6, 0.84, 1.0] {
                let rank = ((m - 1) as f64 * q).round() as usize;
                assert_eq!(quantile(&values, q), sorted[rank]);
            }
        }
    }

    #[test]
    fn prequal_explains_hot_and_cold() {
        let set = set_with_weights(&[1, 1]);
        let sel = Prequal::new(&set, &SelectorConfig::default());
        let mut rng = fastrand::Rng::with_seed(5);
        let mut ctx = PickContext::new(SECOND, &mut rng);
        let mut out = String::new();
        assert!(sel.explain(&set, &mut ctx, &mut out).is_some());
        assert!(out.starts_with("prequal; picked=b"), "{out}");
        assert!(out.contains("cold"), "{out}");
    }
}
