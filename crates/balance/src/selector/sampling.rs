//! Uniform draws of candidates: a few random positions first, then a scan
//! from a random start, so a draw costs O(1) when most backends are
//! candidates and never more than O(n).

use super::PickContext;
use crate::backend::{BackendId, BackendSet};

/// Random positions tried before scanning.
const RANDOM_TRIES: usize = 8;

/// A candidate drawn uniformly (weights are not considered), other than
/// `other`, or `None` when there is none.
pub fn uniform_candidate(
    set: &BackendSet,
    ctx: &mut PickContext<'_>,
    other: Option<BackendId>,
) -> Option<BackendId> {
    match other {
        Some(a) => uniform_candidate_except(set, ctx, &[a]),
        None => uniform_candidate_except(set, ctx, &[]),
    }
}

/// A candidate drawn uniformly, none of `others`, or `None` when there is
/// none.
pub fn uniform_candidate_except(
    set: &BackendSet,
    ctx: &mut PickContext<'_>,
    others: &[BackendId],
) -> Option<BackendId> {
    let n = set.len();
    if n == 0 {
        return None;
    }
    for _ in 0..RANDOM_TRIES {
        let id = BackendId(ctx.rng.usize(0..n) as u32);
        if !others.contains(&id) && ctx.is_candidate(set, id) {
            return Some(id);
        }
    }
    // Most backends are not candidates: scan from a random start. Not exactly
    // uniform (a candidate after a long gap is favoured), which is harmless
    // for the few-choice selectors that use it.
    let start = ctx.rng.usize(0..n);
    (0..n)
        .map(|step| BackendId(((start + step) % n) as u32))
        .find(|&id| !others.contains(&id) && ctx.is_candidate(set, id))
}
