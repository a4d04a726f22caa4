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

/// The ticker of an idle check: its first tick is one `period` from now
/// (an `interval` would tick at once, registering an expired timer for
/// nothing), and after a stall (a paused process, an overloaded machine)
/// the next tick is a full period after the late one. Catching up with two
/// ticks back to back would see no activity between them and close a
/// connection or flow that was not idle.
pub fn idle_ticker(period: std::time::Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::idle_ticker;

    #[tokio::test(start_paused = true)]
    async fn idle_ticker_waits_a_period_and_does_not_catch_up_after_a_stall() {
        let period = Duration::from_secs(10);
        let start = Instant::now();
        let mut ticker = idle_ticker(period);
        ticker.tick().await;
        assert_eq!(start.elapsed(), period, "the first tick is a period away");
        // A stall of three and a half periods: the missed tick fires late,
        // once, and the next one is a whole period after it.
        tokio::time::advance(Duration::from_secs(35)).await;
        ticker.tick().await;
        let late = Instant::now();
        ticker.tick().await;
        assert_eq!(late.elapsed(), period, "no back-to-back catch-up tick");
    }
}
