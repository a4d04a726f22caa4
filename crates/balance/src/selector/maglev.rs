//! Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016) with bounded load.
//!
//! A lookup table of M slots (M prime) is filled by letting every backend
//! claim slots in the order of its own permutation
//! `(offset + j × skip) mod M`, taking turns, so each backend ends up with
//! almost exactly its share of the table. A key is served by
//! `table[hash(key) mod M]`: one array read, faster than a ring's binary
//! search. When the set changes most slots keep their backend — disruption
//! is small but, unlike the ring, not minimal (Envoy and Google Cloud say
//! "not as stable as ring hash").
//!
//! * **Table size.** The smallest prime ≥ 100 × backends, and at least
//!   65 537 (Envoy's default): the paper's M > 100·N keeps every backend's
//!   share of the table within about 1 % of fair.
//! * **Weights.** A backend takes a turn in fill round `r` while its
//!   claimed slots are below `(r + 1) × weight / max weight`, so slots are
//!   claimed in proportion to weight.
//! * **Walk.** Non-candidates and backends over the
//!   [bounded-load](super::bounded_load) limit (c = 1.25 by default; slow
//!   start lowers a ramping backend's limit) pass the request to the next
//!   slots of the table, a key-specific, pseudo-random sequence of
//!   backends. As for [`RingHash`](super::RingHash): after
//!   [`max_walk`](super::ring_hash::max_walk) slots, the first candidate
//!   seen, else a weighted random candidate; no key, a weighted random one.

use super::bounded_load::BoundedLoad;
use super::hashing::{hash_address, mix64};
use super::ring_hash::max_walk;
use super::weight_table::WeightTable;
use super::{PickContext, Selector, SelectorConfig};
use crate::backend::{AdminState, BackendId, BackendSet};

/// Smallest table (Envoy's default size, a prime).
pub const MIN_TABLE_SIZE: u64 = 65_537;

/// Maglev lookup table with bounded load.
#[derive(Debug)]
pub struct Maglev {
    table: Vec<BackendId>,
    bound: BoundedLoad,
    weights: WeightTable,
    max_walk: usize,
}

impl Maglev {
    /// Fills the lookup table for `set`.
    pub fn new(set: &BackendSet, config: &SelectorConfig) -> Self {
        let members: Vec<(BackendId, &str, u32)> = set
            .backends()
            .iter()
            .enumerate()
            .filter(|(_, b)| b.admin == AdminState::Enabled && b.weight > 0)
            .map(|(i, b)| (BackendId(i as u32), b.address.as_str(), b.weight))
            .collect();
        let table = if members.is_empty() {
            Vec::new()
        } else {
            fill(&members, table_size(members.len()))
        };
        Self {
            max_walk: max_walk(table.len(), members.len()),
            table,
            bound: BoundedLoad::new(set, config.hash_balance_factor, 0),
            weights: WeightTable::new(set),
        }
    }

    /// The lookup table size M.
    pub fn table_size(&self) -> usize {
        self.table.len()
    }
}

/// The smallest prime ≥ max(100 × n, [`MIN_TABLE_SIZE`]).
pub fn table_size(n: usize) -> u64 {
    let mut m = (100 * n as u64).max(MIN_TABLE_SIZE);
    while !is_prime(m) {
        m += 1;
    }
    m
}

fn is_prime(m: u64) -> bool {
    if m < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= m {
        if m % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

fn fill(members: &[(BackendId, &str, u32)], m: u64) -> Vec<BackendId> {
    const EMPTY: BackendId = BackendId(u32::MAX);
    let max_weight = f64::from(members.iter().map(|x| x.2).max().unwrap_or(1));
    // Per backend: offset, skip, next permutation index, slots claimed.
    let mut perm: Vec<(u64, u64, u64, u64)> = members
        .iter()
        .map(|&(_, address, _)| {
            let offset = hash_address(address, 0x6d61_676c) % m;
            let skip = hash_address(address, 0x6576_2121) % (m - 1) + 1;
            (offset, skip, 0, 0)
        })
        .collect();
    let mut table = vec![EMPTY; m as usize];
    let mut filled = 0u64;
    let mut round = 0u64;
    while filled < m {
        for (k, &(id, _, weight)) in members.iter().enumerate() {
            let (offset, skip, next, claimed) = &mut perm[k];
            let quota = ((round + 1) as f64 * f64::from(weight) / max_weight).floor() as u64;
            if *claimed >= quota {
                continue;
            }
            loop {
                let slot = ((*offset + *next * *skip) % m) as usize;
                *next += 1;
                if table[slot] == EMPTY {
                    table[slot] = id;
                    break;
                }
            }
            *claimed += 1;
            filled += 1;
            if filled == m {
                break;
            }
        }
        round += 1;
    }
    table
}

impl Selector for Maglev {
    fn name(&self) -> &'static str {
        "maglev"
    }

    fn pick(&self, set: &BackendSet, ctx: &mut PickContext<'_>) -> Option<BackendId> {
        let Some(key) = ctx.key else {
            return self.weights.draw(set, ctx);
        };
        let len = self.table.len();
        if len == 0 {
            return None;
        }
        let start = (mix64(key) % len as u64) as usize;
        self.bound
            .walk(set, ctx, &self.table, start, self.max_walk)
            .or_else(|| self.weights.draw(set, ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maglev_table_size_is_a_prime_above_a_hundred_per_backend() {
        assert_eq!(table_size(3), 65_537);
        assert_eq!(table_size(1000), 100_003);
        assert!(is_prime(table_size(777)) && table_size(777) >= 77_700);
    }

    #[test]
    fn maglev_shares_the_table_by_weight() {
        let members = [(BackendId(0), "a:1", 1), (BackendId(1), "b:1", 3)];
        let table = fill(&members, 65_537);
        let b = table.iter().filter(|&&id| id == BackendId(1)).count() as f64;
        assert!((b / 65_537.0 - 0.75).abs() < 0.01, "{b}");
    }
}
