//! Power of two choices on requests in flight.
//!
//! Draw two distinct candidates uniformly at random and send the request to
//! the less loaded one. Mitzenmacher (IEEE TPDS 2001) showed that two random
//! choices cut the maximum load from `log n / log log n` to `log log n`, and
//! Envoy's `LEAST_REQUEST` (default `choice_count = 2`) and tower's `p2c`
//! use it because it is nearly as good as a full scan in O(1), and — unlike
//! a full scan — robust to stale load information (it does not herd every
//! proxy onto the one least-loaded backend).
//!
//! Load is `(in_flight + 1) / effective_weight`, so weights (and slow start)
//! bias the comparison: a weight-2 backend wins against a weight-1 backend
//! until it carries about twice the requests. Ties go to the first draw,
//! which is itself random. A single candidate is returned as is.

use std::fmt::Write as _;

use super::least_conn::LeastConn;
use super::sampling::uniform_candidate;
use super::{write_header, PickContext, Selector};
use crate::backend::{BackendId, BackendSet};

/// Power of two choices on weighted in-flight counts.
#[derive(Debug, Default)]
pub struct P2c;

impl P2c {
    /// The selector (it keeps no state).
    pub fn new() -> Self {
        Self
    }

    fn choose(
        set: &BackendSet,
        ctx: &mut PickContext<'_>,
    ) -> Option<(BackendId, Option<BackendId>)> {
        let a = uniform_candidate(set, ctx, None)?;
        Some((a, uniform_candidate(set, ctx, Some(a))))
    }
}

impl Selector for P2c {
    fn name(&self) -> &'static str {
        "p2c"
    }

    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        match Self::choose(set, ctx)? {
            (a, Some(b))
                if LeastConn::score(set, b, ctx.now) < LeastConn::score(set, a, ctx.now) =>
            {
                Some(b)
            }
            (a, _) => Some(a),
        }
    }

    fn explain(
        &self,
        set: &BackendSet,
        ctx: &mut PickContext<'_>,
        out: &mut String,
    ) -> Option<BackendId> {
        let Some((a, b)) = Self::choose(set, ctx) else {
            write_header(out, self.name(), set, None);
            return None;
        };
        let now = ctx.now;
        let picked = match b {
            Some(b) if LeastConn::score(set, b, now) < LeastConn::score(set, a, now) => b,
            _ => a,
        };
        write_header(out, self.name(), set, Some(picked));
        for (k, id) in [Some(a), b].into_iter().flatten().enumerate() {
            let backend = set.get(id);
            let _ = write!(
                out,
                "{}{} in_flight={} score={:.3}",
                if k == 0 { "; candidates=" } else { ", " },
                backend.address,
                backend.state.load.in_flight(),
                LeastConn::score(set, id, now)
            );
        }
        Some(picked)
    }
}
