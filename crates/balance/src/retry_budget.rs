//! Retry budget: retries may add at most a fixed share to a cluster's load.
//!
//! Retries help when one backend fails and hurt when all do: every failed
//! request then becomes three, and an overloaded cluster gets more
//! overloaded (a retry storm). Following Finagle's `RetryBudget` and gRPC's
//! retry throttling, each request *deposits* `ratio` of a token and each
//! retry *withdraws* a whole one, so retries stay below `ratio` of the
//! requests. A small floor of `min_per_second` tokens per second keeps
//! retries possible when traffic is light (one request a minute still gets
//! its retry). The balance is capped so a long quiet spell cannot bank an
//! unbounded burst.
//!
//! Lock-free: one atomic balance in thousandths of a token, one atomic
//! timestamp for the floor's refill. `now` is passed in.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::{Nanos, SECOND};

/// Finagle's default: retries add at most 20% to the request rate.
pub const DEFAULT_RATIO: f64 = 0.2;
/// Finagle's default floor: 10 retries per second are always allowed.
pub const DEFAULT_MIN_PER_SECOND: u32 = 10;

/// Thousandths of a token per token.
const MILLI: i64 = 1000;

/// A cluster's retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    /// Milli-tokens deposited per request.
    deposit: i64,
    /// Milli-tokens added per second by the floor.
    floor: i64,
    /// Largest balance in milli-tokens.
    cap: i64,
    balance: AtomicI64,
    refilled_at: AtomicU64,
    /// Retries refused so far (for metrics).
    pub refused: AtomicU64,
    /// Retries allowed so far (for metrics).
    pub allowed: AtomicU64,
}

impl RetryBudget {
    /// A budget allowing retries up to `ratio` of requests plus
    /// `min_per_second`; starts with one second of floor in the bank.
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        let deposit = (ratio.clamp(0.0, 1.0) * MILLI as f64).round() as i64;
        let floor = i64::from(min_per_second) * MILLI;
        // Ten seconds of floor, or 100 tokens: enough for a burst, not a storm.
        let cap = (floor * 10).max(100 * MILLI);
        Self {
            deposit,
            floor,
            cap,
            balance: AtomicI64::new(floor),
            refilled_at: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
        }
    }

    /// Whether the budget is configured as given.
    pub fn matches(&self, ratio: f64, min_per_second: u32) -> bool {
        let other = Self::new(ratio, min_per_second);
        (self.deposit, self.floor) == (other.deposit, other.floor)
    }

    /// Records one request (call once per request, not per attempt).
    #[inline]
    pub fn deposit(&self) {
        if self.deposit > 0 {
            let b = self.balance.fetch_add(self.deposit, Ordering::Relaxed);
            if b + self.deposit > self.cap {
                self.balance.fetch_min(self.cap, Ordering::Relaxed);
            }
        }
    }

    /// Takes a token for one retry at `now`; `false` when the budget is spent.
    pub fn try_withdraw(&self, now: Nanos) -> bool {
        self.refill(now);
        let mut b = self.balance.load(Ordering::Relaxed);
        loop {
            if b < MILLI {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            match self.balance.compare_exchange_weak(
                b,
                b - MILLI,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.allowed.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(actual) => b = actual,
            }
        }
    }

    /// Adds the floor's tokens for the time since the last refill.
    fn refill(&self, now: Nanos) {
        if self.floor == 0 {
            return;
        }
        let last = self.refilled_at.load(Ordering::Relaxed);
        if last == 0 {
            // First use: the initial balance already holds a second of floor.
            let _ = self.refilled_at.compare_exchange(
                0,
                now.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return;
        }
        // Refill at most every millisecond; a lost race just skips one.
        if now.saturating_sub(last) < SECOND / 1000
            || self
                .refilled_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let elapsed = now.saturating_sub(last).min(10 * SECOND);
        let add = (self.floor as i128 * elapsed as i128 / SECOND as i128) as i64;
        let b = self.balance.fetch_add(add, Ordering::Relaxed);
        if b + add > self.cap {
            self.balance.fetch_min(self.cap, Ordering::Relaxed);
        }
    }

    /// Whole tokens in the bank.
    pub fn balance(&self) -> i64 {
        self.balance.load(Ordering::Relaxed) / MILLI
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(DEFAULT_RATIO, DEFAULT_MIN_PER_SECOND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_below_the_ratio_without_a_floor() {
        let b = RetryBudget::new(0.2, 0);
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.try_withdraw(0) {
                retries += 1;
            }
        }
        assert_eq!(retries, 200);
        assert_eq!(b.refused.load(Ordering::Relaxed), 800);
    }

    #[test]
    fn the_floor_allows_retries_when_traffic_is_light() {
        let b = RetryBudget::new(0.2, 10);
        // The first second's floor is banked at the start.
        let first: usize = (0..20).filter(|_| b.try_withdraw(SECOND)).count();
        assert_eq!(first, 10);
        assert!(!b.try_withdraw(SECOND));
        // Half a second later, five more.
        let later: usize = (0..20)
            .filter(|_| b.try_withdraw(SECOND + SECOND / 2))
            .count();
        assert_eq!(later, 5);
    }

    #[test]
    fn a_quiet_spell_banks_a_bounded_burst() {
        let b = RetryBudget::new(0.2, 1);
        let n: usize = (0..1000).filter(|_| b.try_withdraw(3600 * SECOND)).count();
        assert!(n <= 100, "{n}");
    }
}
