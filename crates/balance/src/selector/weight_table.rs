//! Weighted random draws over a snapshot, exact under slow start and health.
//!
//! [`WeightTable`] holds the cumulative *configured* weights of the backends
//! that can ever be candidates in this snapshot (enabled, weight > 0). A draw
//! is rejection sampling: pick a backend in proportion to its configured
//! weight by binary search, then accept it with probability
//! `effective_weight / weight` (1 outside slow start) and only if it is a
//! candidate for this request. Accepted draws are therefore distributed
//! exactly in proportion to the effective weights of the candidates. After
//! [`MAX_REJECTIONS`] rejections (most of the set is down or excluded) an
//! exact linear draw over the candidates finishes the job, which keeps the
//! distribution exact and bounds the time.

use super::PickContext;
use crate::backend::{AdminState, BackendId, BackendSet};

/// Rejections before falling back to a linear draw. With half the weight
/// unusable, 8 tries fail with probability 1/256, so the linear path is rare
/// unless most of the set is gone, when it is cheap enough anyway.
pub const MAX_REJECTIONS: usize = 8;

/// Cumulative configured weights of the backends that may be candidates.
#[derive(Debug, Default)]
pub struct WeightTable {
    /// `cumulative[k]` is the sum of weights of `ids[..=k]`.
    cumulative: Vec<u64>,
    ids: Vec<BackendId>,
}

impl WeightTable {
    /// Precomputes the table for `set`.
    pub fn new(set: &BackendSet) -> Self {
        let mut total = 0u64;
        let mut cumulative = Vec::new();
        let mut ids = Vec::new();
        for (i, b) in set.backends().iter().enumerate() {
            if b.admin == AdminState::Enabled && b.weight > 0 {
                total += u64::from(b.weight);
                cumulative.push(total);
                ids.push(BackendId(i as u32));
            }
        }
        Self { cumulative, ids }
    }

    /// Draws a candidate in proportion to its effective weight, or `None`
    /// when there is no candidate.
    pub fn draw(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let total = *self.cumulative.last()?;
        for _ in 0..MAX_REJECTIONS {
            let x = ctx.rng.u64(0..total);
            let k = self.cumulative.partition_point(|&c| c <= x);
            let id = self.ids[k];
            if accept(set, ctx, id) {
                return Some(id);
            }
        }
        self.draw_linear(set, ctx)
    }

    /// The exact, O(n) draw used when rejection sampling keeps failing.
    fn draw_linear(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let mut total = 0.0;
        for &id in &self.ids {
            if ctx.is_candidate(set, id) {
                total += set.effective_weight(id, ctx.now);
            }
        }
        if total <= 0.0 {
            return None;
        }
        let mut x = ctx.rng.f64() * total;
        let mut last = None;
        for &id in &self.ids {
            if ctx.is_candidate(set, id) {
                x -= set.effective_weight(id, ctx.now);
                last = Some(id);
                if x < 0.0 {
                    return last;
                }
            }
        }
        last
    }
}

/// Whether a backend drawn by configured weight is kept: it must be a
/// candidate, and under slow start survives with probability
/// `effective / configured` weight.
#[inline]
pub fn accept(set: &BackendSet, ctx: &mut PickContext<'_>, id: BackendId) -> bool {
    if !ctx.is_candidate(set, id) {
        return false;
    }
    let weight = f64::from(set.get(id).weight);
    let effective = set.effective_weight(id, ctx.now);
    effective >= weight || ctx.rng.f64() * weight < effective
}
