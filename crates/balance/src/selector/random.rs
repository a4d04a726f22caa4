//! Weighted random: each request goes to a candidate drawn in proportion to
//! its effective weight.
//!
//! HAProxy's `balance random` with one draw. It needs no shared state at all,
//! which makes it the baseline that can never herd — and the baseline every
//! load-aware algorithm must beat. The draw is rejection sampling over a
//! table of cumulative weights built with the selector ([`WeightTable`]):
//! O(log n) per pick and exact under slow start and health changes.

use super::weight_table::WeightTable;
use super::{PickContext, Selector};
use crate::backend::{BackendId, BackendSet};

/// Weighted random choice.
#[derive(Debug)]
pub struct Random {
    table: WeightTable,
}

impl Random {
    /// Precomputes the weight table for `set`.
    pub fn new(set: &BackendSet) -> Self {
        Self {
            table: WeightTable::new(set),
        }
    }
}

impl Selector for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        self.table.draw(set, ctx)
    }
}
