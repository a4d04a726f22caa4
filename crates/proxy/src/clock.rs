//! The proxy's monotonic clock in [`Nanos`], the time base handed to the
//! pure scheduling code.

use std::sync::OnceLock;
use std::time::Instant;

use fulcrum_balance::Nanos;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process's clock epoch (never 0 after the first call).
#[inline]
pub fn now() -> Nanos {
    epoch().elapsed().as_nanos() as Nanos + 1
}

/// Converts an [`Instant`] to the same time base.
#[inline]
pub fn at(instant: Instant) -> Nanos {
    instant.saturating_duration_since(epoch()).as_nanos() as Nanos + 1
}
