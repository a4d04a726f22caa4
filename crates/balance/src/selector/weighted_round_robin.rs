//! Weighted round-robin, smooth as NGINX does it.
//!
//! NGINX's smooth weighted round-robin (`ngx_http_upstream_get_peer`, 2012)
//! keeps a `current` counter per backend; each turn every counter grows by
//! its weight, the largest wins and is lowered by the total. For weights
//! 5, 1, 1 it yields `a a b a c a a` rather than HAProxy's older bursty
//! `a a a a a b c`, so a heavy backend never takes a long run of requests.
//!
//! NGINX runs this under a lock on every request. Fulcrum cannot (pick is
//! lock-free), so the whole schedule is computed when the selector is built —
//! once per snapshot, off the hot path — and `pick` walks it with one atomic
//! counter:
//!
//! * weights are divided by their greatest common divisor, so 100/200/300
//!   is a schedule of length 6, not 600;
//! * the schedule is at most [`MAX_SCHEDULE`] entries (or one per backend if
//!   there are more backends): larger weight sums are scaled down
//!   proportionally, each weight kept at least 1, which changes shares by
//!   less than one part in the schedule length;
//! * building costs O(schedule × backends) with NGINX's rule; when that
//!   would exceed [`MAX_BUILD_STEPS`] (thousands of backends) the schedule is
//!   built with the equivalent earliest-virtual-deadline rule in
//!   O(schedule × log backends). Both keep every backend within about one
//!   turn of its exact share at every prefix of the schedule (tested: below
//!   1 for NGINX's rule, below 1.2 for the deadline rule); with equal
//!   weights both are plain round-robin.
//!
//! At pick time an entry that is not a candidate (down, excluded) passes its
//! turn to the next entry, like [`RoundRobin`](super::RoundRobin). Slow start
//! is applied by a probabilistic skip: an entry of a ramping backend is kept
//! with probability `effective_weight / weight`, so its share ramps with its
//! effective weight and its lost turns go to the others.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::weight_table::accept;
use super::{PickContext, Selector};
use crate::backend::{AdminState, BackendId, BackendSet};

/// Longest precomputed schedule (entries of 4 bytes: 256 KiB). Weight sums
/// up to this are exact after gcd reduction; typical configurations (weights
/// 1–100 over tens of backends) are far below it.
pub const MAX_SCHEDULE: usize = 1 << 16;

/// Work budget for building with NGINX's O(n) per-entry rule; beyond it the
/// heap-based rule is used (same smoothness bound, O(log n) per entry).
pub const MAX_BUILD_STEPS: usize = 1 << 22;

/// Smooth weighted round-robin over a precomputed schedule.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    schedule: Vec<BackendId>,
    next: AtomicUsize,
}

impl WeightedRoundRobin {
    /// Precomputes the schedule for `set`.
    pub fn new(set: &BackendSet) -> Self {
        let entries: Vec<(BackendId, u64)> = set
            .backends()
            .iter()
            .enumerate()
            .filter(|(_, b)| b.admin == AdminState::Enabled && b.weight > 0)
            .map(|(i, b)| (BackendId(i as u32), u64::from(b.weight)))
            .collect();
        let weights = reduce_weights(entries.iter().map(|e| e.1).collect(), entries.len());
        let order = if weights.iter().sum::<u64>() as usize * weights.len() <= MAX_BUILD_STEPS {
            smooth_schedule(&weights)
        } else {
            deadline_schedule(&weights)
        };
        Self {
            schedule: order.into_iter().map(|k| entries[k].0).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The precomputed schedule (backend ids in turn order).
    pub fn schedule(&self) -> &[BackendId] {
        &self.schedule
    }
}

/// Divides by the gcd, then scales down to at most `max(MAX_SCHEDULE, n)` entries.
fn reduce_weights(mut weights: Vec<u64>, n: usize) -> Vec<u64> {
    let g = weights.iter().copied().fold(0, gcd);
    if g > 1 {
        weights.iter_mut().for_each(|w| *w /= g);
    }
    let cap = MAX_SCHEDULE.max(n) as u64;
    let total: u64 = weights.iter().sum();
    if total > cap {
        // Scale so the sum lands near `cap - n` and the max(1) floors keep it under cap.
        let budget = (cap - n as u64).max(1) as f64;
        let scale = budget / total as f64;
        weights
            .iter_mut()
            .for_each(|w| *w = ((*w as f64 * scale).round() as u64).max(1));
    }
    weights
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// NGINX's rule: every turn each `current` grows by its weight; the largest
/// (first on ties) is picked and lowered by the total.
fn smooth_schedule(weights: &[u64]) -> Vec<usize> {
    let total: i64 = weights.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (k, c) in current.iter_mut().enumerate() {
            *c += weights[k] as i64;
        }
        for k in 1..current.len() {
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total;
        order.push(best);
    }
    order
}

/// Earliest virtual deadline first: backend `k`'s `j`-th turn is due at
/// `(j + 1/2) / w_k`; turns are taken in deadline order (position on ties).
/// Each backend stays within about one turn of its exact share at every prefix.
fn deadline_schedule(weights: &[u64]) -> Vec<usize> {
    let total: u64 = weights.iter().sum();
    // Compare (2j + 1) / (2 w) exactly as fractions via cross-multiplication.
    #[derive(PartialEq, Eq)]
    struct Due {
        num: u64,
        den: u64,
        k: usize,
    }
    impl Ord for Due {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            (u128::from(self.num) * u128::from(other.den))
                .cmp(&(u128::from(other.num) * u128::from(self.den)))
                .then(self.k.cmp(&other.k))
        }
    }
    impl PartialOrd for Due {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    let mut heap: BinaryHeap<Reverse<Due>> = weights
        .iter()
        .enumerate()
        .map(|(k, &w)| {
            Reverse(Due {
                num: 1,
                den: 2 * w,
                k,
            })
        })
        .collect();
    let mut order = Vec::with_capacity(total as usize);
    while order.len() < total as usize {
        let Reverse(mut due) = heap.pop().expect("weights are non-empty");
        order.push(due.k);
        due.num += 2;
        heap.push(Reverse(due));
    }
    order
}

impl Selector for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "weighted-round-robin"
    }

    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let len = self.schedule.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for step in 0..len {
            let id = self.schedule[(start + step) % len];
            if accept(set, ctx, id) {
                if step > 0 {
                    self.next.fetch_add(step, Ordering::Relaxed);
                }
                return Some(id);
            }
        }
        // A full lap without a keeper: every candidate lost its slow-start
        // draws (or there is none). Take the first candidate, if any.
        (0..len)
            .map(|step| self.schedule[(start + step) % len])
            .find(|&id| ctx.is_candidate(set, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::testing::set_with_weights;

    fn names(set: &BackendSet, wrr: &WeightedRoundRobin) -> String {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut ctx = PickContext::new(0, &mut rng);
        (0..7)
            .map(|_| {
                let id = wrr.pick(set, &mut ctx).unwrap();
                (b'a' + id.0 as u8) as char
            })
            .collect()
    }

    #[test]
    fn weighted_round_robin_is_smooth_like_nginx() {
        let set = set_with_weights(&[5, 1, 1]);
        assert_eq!(names(&set, &WeightedRoundRobin::new(&set)), "aabacaa");
    }

    #[test]
    fn weighted_round_robin_reduces_weights_by_gcd() {
        let set = set_with_weights(&[100, 200, 300]);
        assert_eq!(WeightedRoundRobin::new(&set).schedule().len(), 6);
    }

    #[test]
    fn weighted_round_robin_caps_huge_weight_sums() {
        let set = set_with_weights(&[1_000_000, 999_999, 1]);
        let wrr = WeightedRoundRobin::new(&set);
        assert!(wrr.schedule().len() <= MAX_SCHEDULE);
        assert!(wrr.schedule().contains(&BackendId(2)));
    }

    fn max_prefix_error(weights: &[u64], order: &[usize]) -> f64 {
        let total: u64 = weights.iter().sum();
        let mut counts = vec![0u64; weights.len()];
        let mut worst = 0.0f64;
        for (t, &k) in order.iter().enumerate() {
            counts[k] += 1;
            for (j, &w) in weights.iter().enumerate() {
                let exact = (t as f64 + 1.0) * w as f64 / total as f64;
                worst = worst.max((counts[j] as f64 - exact).abs());
            }
        }
        worst
    }

    #[test]
    fn weighted_round_robin_both_rules_keep_shares_in_every_prefix() {
        let mut rng = fastrand::Rng::with_seed(9);
        let mut worst = (0.0f64, 0.0f64);
        for _ in 0..200 {
            let n = rng.usize(1..12);
            let weights: Vec<u64> = (0..n).map(|_| rng.u64(1..20)).collect();
            let smooth = max_prefix_error(&weights, &smooth_schedule(&weights));
            let deadline = max_prefix_error(&weights, &deadline_schedule(&weights));
            worst = (worst.0.max(smooth), worst.1.max(deadline));
        }
        eprintln!(
            "worst prefix error: smooth {} deadline {}",
            worst.0, worst.1
        );
        assert!(worst.0 < 2.0 && worst.1 < 2.0, "{worst:?}");
    }
}
