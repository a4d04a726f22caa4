//! Weighted least-connections: the candidate with the fewest requests in
//! flight per unit of weight.
//!
//! HAProxy's `leastconn` and NGINX's `least_conn`. The score of a candidate
//! is `(in_flight + 1) / effective_weight`: the load it would carry *after*
//! taking this request, per unit of weight. The `+ 1` matters when the
//! cluster is idle — every backend has 0 in flight, and without it weights
//! would be ignored; with it a weight-2 backend is preferred to a weight-1
//! one until it carries one more request (HAProxy scores the same way).
//! Ties are broken uniformly at random (reservoir sampling over the tied
//! candidates), so equal backends share the traffic instead of the first one
//! absorbing every burst.
//!
//! A full scan costs O(n) per pick: exact, and fine for tens of backends; for
//! hundreds or more, [`P2c`](super::P2c) is nearly as good (Mitzenmacher) in
//! O(1). Every proxy sees only its own in-flight counts, so several Fulcrum
//! instances in front of the same backends each balance their own share.

use std::fmt::Write as _;

use super::{write_header, PickContext, Selector};
use crate::backend::{BackendId, BackendSet};

/// Weighted least-connections with random tie-breaking.
#[derive(Debug, Default)]
pub struct LeastConn;

impl LeastConn {
    /// The selector (it keeps no state).
    pub fn new() -> Self {
        Self
    }

    /// `(in_flight + 1) / effective_weight` of `id` at `now`.
    #[inline]
    pub fn score(set: &BackendSet, id: BackendId, now: crate::Nanos) -> f64 {
        let in_flight = set.get(id).state.load.in_flight();
        (f64::from(in_flight) + 1.0) / set.effective_weight(id, now)
    }
}

impl Selector for LeastConn {
    fn name(&self) -> &'static str {
        "least-conn"
    }

    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let mut best: Option<(BackendId, f64)> = None;
        let mut ties = 0u32;
        for i in 0..set.len() {
            let id = BackendId(i as u32);
            if !ctx.is_candidate(set, id) {
                continue;
            }
            let score = Self::score(set, id, ctx.now);
            match best {
                Some((_, s)) if score > s => {}
                Some((_, s)) if score == s => {
                    ties += 1;
                    if ctx.rng.u32(0..ties) == 0 {
                        best = Some((id, score));
                    }
                }
                _ => {
                    best = Some((id, score));
                    ties = 1;
                }
            }
        }
        best.map(|(id, _)| id)
    }

    fn explain(
        &self,
        set: &BackendSet,
        ctx: &mut PickContext<'_>,
        out: &mut String,
    ) -> Option<BackendId> {
        let picked = self.pick(set, ctx);
        write_header(out, self.name(), set, picked);
        let mut first = true;
        for i in 0..set.len().min(super::EXPLAIN_MAX_CANDIDATES) {
            let id = BackendId(i as u32);
            if ctx.is_candidate(set, id) {
                let b = set.get(id);
                let _ = write!(
                    out,
                    "{}{} in_flight={} score={:.3}",
                    if first { "; candidates=" } else { ", " },
                    b.address,
                    b.state.load.in_flight(),
                    Self::score(set, id, ctx.now)
                );
                first = false;
            }
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::testing::set_with_weights;

    #[test]
    fn least_conn_prefers_fewest_in_flight_per_weight() {
        let set = set_with_weights(&[1, 4, 1]);
        let _a = set.get(BackendId(0)).state.load.start();
        let _b: Vec<_> = (0..2)
            .map(|_| set.get(BackendId(1)).state.load.start())
            .collect();
        let _c = set.get(BackendId(2)).state.load.start();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut ctx = PickContext::new(0, &mut rng);
        // Scores: b0 = 2/1, b1 = 3/4, b2 = 2/1.
        assert_eq!(LeastConn.pick(&set, &mut ctx), Some(BackendId(1)));
    }

    #[test]
    fn least_conn_shares_ties() {
        let set = set_with_weights(&[1, 1, 1]);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut ctx = PickContext::new(0, &mut rng);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[LeastConn.pick(&set, &mut ctx).unwrap().index()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
