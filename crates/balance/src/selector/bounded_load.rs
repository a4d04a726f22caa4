//! Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
//! SODA 2018; HAProxy `hash-balance-factor`, Envoy `hash_balance_factor`).
//!
//! A backend may take a request only while
//! `in_flight + 1 ≤ ceil(c × (total_in_flight + 1) × w / W)`, where `w` is its
//! effective weight and `W` the sum over usable backends — with equal
//! weights exactly `ceil(c × (total + 1) / candidates)`. When a key's home is
//! full, the hashing selector walks on to the next backend in its order, so
//! a hot key spills over to a few neighbours instead of melting its home.
//! Since the average is at most the bound, some backend always has room.
//! `c` defaults to [`DEFAULT_BALANCE_FACTOR`] = 1.25, the value Vimeo chose
//! for HAProxy (cache bandwidth cut almost 8×): 25 % headroom keeps most
//! keys at home while capping the hottest backend.
//!
//! The totals need a scan of every backend. Up to [`EXACT_SCAN_MAX`]
//! backends the scan runs on every pick (exact). Above it the totals are
//! cached in one atomic word and rescanned every `n / 8` picks or after
//! [`RESCAN_INTERVAL`], whichever comes first, so the scan costs about 8
//! backend reads per pick amortised. Between rescans the picks made can
//! raise the average by at most `(n / 8) / candidates` — about an eighth of
//! a request — well within the 25 % headroom; the interval bounds the
//! staleness when traffic is light and completions dominate.

use std::sync::atomic::{AtomicU64, Ordering};

use super::PickContext;
use crate::backend::{BackendId, BackendSet};
use crate::Nanos;

/// Default balance factor c: 1.25.
pub const DEFAULT_BALANCE_FACTOR: f64 = 1.25;

/// Largest set scanned on every pick.
pub const EXACT_SCAN_MAX: usize = 64;

/// Longest time the cached totals are used before a rescan: 100 ms.
pub const RESCAN_INTERVAL: Nanos = 100 * crate::MILLISECOND;

/// The bounded-load rule for one snapshot.
#[derive(Debug)]
pub struct BoundedLoad {
    factor: f64,
    /// `total_in_flight (u32) << 32 | total effective weight (f32 bits)`.
    cache: AtomicU64,
    picks: AtomicU64,
    rescan_every: u64,
    /// When the cache was last filled.
    scanned_at: AtomicU64,
}

impl BoundedLoad {
    /// The rule with factor `c` (values below 1 are raised to 1) for `set`.
    pub fn new(set: &BackendSet, factor: f64, now: Nanos) -> Self {
        let this = Self {
            factor: if factor.is_nan() {
                1.0
            } else {
                factor.max(1.0)
            },
            cache: AtomicU64::new(0),
            picks: AtomicU64::new(1),
            rescan_every: (set.len() as u64 / 8).max(1),
            scanned_at: AtomicU64::new(now),
        };
        this.cache.store(scan(set, now), Ordering::Relaxed);
        this
    }

    /// The per-unit-of-weight capacity for this pick: `c × (total + 1) / W`.
    pub fn capacity(&self, set: &BackendSet, ctx: &PickContext<'_>) -> f64 {
        let word = if set.len() <= EXACT_SCAN_MAX {
            scan(set, ctx.now)
        } else if self.picks.fetch_add(1, Ordering::Relaxed) % self.rescan_every == 0
            || ctx
                .now
                .saturating_sub(self.scanned_at.load(Ordering::Relaxed))
                >= RESCAN_INTERVAL
        {
            let word = scan(set, ctx.now);
            self.cache.store(word, Ordering::Relaxed);
            self.scanned_at.store(ctx.now, Ordering::Relaxed);
            word
        } else {
            self.cache.load(Ordering::Relaxed)
        };
        let total = (word >> 32) as f64;
        let weight = f64::from(f32::from_bits(word as u32));
        if weight <= 0.0 {
            return f64::INFINITY;
        }
        self.factor * (total + 1.0) / weight
    }

    /// Whether `id` has room under `capacity` (from [`capacity`](Self::capacity)).
    #[inline]
    pub fn admits(&self, set: &BackendSet, id: BackendId, capacity: f64, now: Nanos) -> bool {
        let limit = (capacity * set.effective_weight(id, now)).ceil();
        f64::from(set.get(id).state.load.in_flight()) + 1.0 <= limit
    }

    /// Walks a hashing selector's order `ids` from `start` (wrapping) for at
    /// most `max_walk` entries: the first candidate with room under the
    /// bound, else the first candidate seen (everyone is full), else `None`.
    #[inline]
    pub fn walk(
        &self,
        set: &BackendSet,
        ctx: &PickContext<'_>,
        ids: &[BackendId],
        start: usize,
        max_walk: usize,
    ) -> Option<BackendId> {
        let capacity = self.capacity(set, ctx);
        let mut first = None;
        for step in 0..max_walk {
            let id = ids[(start + step) % ids.len()];
            if !ctx.is_candidate(set, id) {
                continue;
            }
            if self.admits(set, id, capacity, ctx.now) {
                return Some(id);
            }
            first = first.or(Some(id));
        }
        first
    }
}

fn scan(set: &BackendSet, now: Nanos) -> u64 {
    let mut total = 0u64;
    let mut weight = 0f64;
    for (i, b) in set.backends().iter().enumerate() {
        if set.is_usable(BackendId(i as u32)) {
            total += u64::from(b.state.load.in_flight());
            weight += set.effective_weight(BackendId(i as u32), now);
        }
    }
    (total.min(u64::from(u32::MAX)) << 32) | u64::from((weight as f32).to_bits())
}
