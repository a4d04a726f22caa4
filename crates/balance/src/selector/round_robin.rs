//! Round-robin: each candidate in turn, ignoring weights beyond zero.
//!
//! The simplest fair policy (HAProxy `roundrobin` without weights, NGINX's
//! default with equal weights). One atomic counter; when the backend at the
//! counter's position is not a candidate, the next one is tried, so a down
//! backend's turn passes to its successor.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{PickContext, Selector};
use crate::backend::{BackendId, BackendSet};

/// Round-robin over the candidates.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// Starts at the first backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Selector for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let n = set.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for step in 0..n {
            let id = BackendId(((start + step) % n) as u32);
            if ctx.is_candidate(set, id) {
                if step > 0 {
                    // Skip the backends we just passed over next time as well.
                    self.next.fetch_add(step, Ordering::Relaxed);
                }
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::testing::{disable, set_with_weights};

    #[test]
    fn round_robin_visits_each_backend_in_turn() {
        let set = set_with_weights(&[1, 1, 1]);
        let rr = RoundRobin::new();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut ctx = PickContext::new(0, &mut rng);
        let picks: Vec<u32> = (0..6).map(|_| rr.pick(&set, &mut ctx).unwrap().0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn round_robin_skips_disabled_and_empty() {
        let set = disable(set_with_weights(&[1, 1, 1]), 1);
        let rr = RoundRobin::new();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut ctx = PickContext::new(0, &mut rng);
        for _ in 0..10 {
            assert_ne!(rr.pick(&set, &mut ctx), Some(BackendId(1)));
        }
        assert_eq!(rr.pick(&BackendSet::default(), &mut ctx), None);
    }
}
