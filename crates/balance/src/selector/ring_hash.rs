//! Ring hash (Karger et al. consistent hashing) with bounded load.
//!
//! Every backend is placed on a 64-bit ring at many pseudo-random points
//! ("virtual nodes"); a request key is hashed onto the ring and served by
//! the first backend clockwise. Removing one of N backends moves only the
//! keys it owned (≈ 1/N); adding one takes ≈ 1/(N+1) from the others. This
//! is Envoy's `RING_HASH` and HAProxy's `hash-type consistent`.
//!
//! * **Virtual nodes.** A backend gets `V × weight / mean weight` points
//!   (at least 1), `V` = [`RING_POINTS`] / N clamped to 16–256: 256 points
//!   each for small clusters (load spread within about ±6 %), fewer for
//!   thousands of backends so the ring stays near [`RING_POINTS`] entries
//!   (1.25 MiB) and builds in milliseconds; bounded load evens out the rest.
//!   Points hash the address (not the position), so a backend keeps its
//!   points in every snapshot.
//! * **Walk.** Backends that are not candidates (down, excluded for a retry)
//!   and backends over the [bounded-load](super::bounded_load) limit are
//!   passed over clockwise. Slow start lowers a ramping backend's limit with
//!   its effective weight. After [`max_walk`] entries without a backend with
//!   room, the first candidate seen takes the request; with none seen, a
//!   weighted random candidate does.
//! * **No key.** Requests without an affinity key get a weighted random
//!   candidate.

use super::bounded_load::BoundedLoad;
use super::hashing::{hash_address, mix64};
use super::weight_table::WeightTable;
use super::{PickContext, Selector, SelectorConfig};
use crate::backend::{AdminState, BackendId, BackendSet};

/// Target number of ring entries for large clusters.
pub const RING_POINTS: usize = 1 << 17;

/// Ring hash with bounded load.
#[derive(Debug)]
pub struct RingHash {
    hashes: Vec<u64>,
    ids: Vec<BackendId>,
    bound: BoundedLoad,
    table: WeightTable,
    max_walk: usize,
}

/// How far a hashing selector walks before giving up on finding room:
/// enough to pass every backend a few times in a small set, bounded for large.
pub fn max_walk(entries: usize, backends: usize) -> usize {
    entries.min(4 * backends + 64)
}

impl RingHash {
    /// Places the backends of `set` on the ring.
    pub fn new(set: &BackendSet, config: &SelectorConfig) -> Self {
        let members: Vec<(BackendId, &str, u32)> = set
            .backends()
            .iter()
            .enumerate()
            .filter(|(_, b)| b.admin == AdminState::Enabled && b.weight > 0)
            .map(|(i, b)| (BackendId(i as u32), b.address.as_str(), b.weight))
            .collect();
        let n = members.len().max(1);
        let mean = members.iter().map(|m| f64::from(m.2)).sum::<f64>() / n as f64;
        let per_unit = (RING_POINTS / n).clamp(16, 256) as f64;
        let mut ring: Vec<(u64, BackendId)> = Vec::new();
        for &(id, address, weight) in &members {
            let points = ((per_unit * f64::from(weight) / mean).round() as u64).max(1);
            ring.extend((0..points).map(|r| (hash_address(address, r), id)));
        }
        ring.sort_unstable();
        let (hashes, ids): (Vec<u64>, Vec<BackendId>) = ring.into_iter().unzip();
        Self {
            max_walk: max_walk(hashes.len(), members.len()),
            hashes,
            ids,
            bound: BoundedLoad::new(set, config.hash_balance_factor, 0),
            table: WeightTable::new(set),
        }
    }

    /// Number of points on the ring.
    pub fn points(&self) -> usize {
        self.hashes.len()
    }
}

impl Selector for RingHash {
    fn name(&self) -> &'static str {
        "ring-hash"
    }

    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let Some(key) = ctx.key else {
            return self.table.draw(set, ctx);
        };
        let len = self.hashes.len();
        if len == 0 {
            return None;
        }
        let h = mix64(key);
        let start = self.hashes.partition_point(|&p| p < h);
        self.bound
            .walk(set, ctx, &self.ids, start, self.max_walk)
            .or_else(|| self.table.draw(set, ctx))
    }
}
