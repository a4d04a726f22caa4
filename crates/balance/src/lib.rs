//! # fulcrum-balance — the pure scheduling core
//!
//! Everything that decides *which backend* lives here, and nothing else: no
//! sockets, no async runtime, no clock, no threads. Time (`now`, in
//! nanoseconds on a monotonic clock chosen by the caller) and randomness (a
//! seeded [`fastrand::Rng`]) are passed in, so every algorithm can be tested
//! with plain `#[test]`s and driven by the simulator (`fulcrum-sim`) exactly
//! as the proxy drives it.
//!
//! The four concerns are kept apart:
//!
//! * **which backends exist** — [`BackendSet`], an immutable snapshot built
//!   off the hot path whenever membership, weights or admin state change;
//! * **are they usable** — [`AdminState`] (operator intent) and the
//!   [`Health`] state machine (probes, outlier detection, panic mode) that
//!   drives the health bit in [`BackendState`], kept separate;
//! * **how loaded** — [`Load`], lock-free atomics updated through
//!   [`InFlightGuard`]s and latency observations, and backends' own load
//!   reports ([`orca`]);
//! * **which one** — a [`Selector`], built from an [`Algorithm`] for each
//!   snapshot.

pub mod admission;
pub mod backend;
pub mod health;
pub mod load;
pub mod orca;
pub mod retry_budget;
pub mod selector;

pub use backend::{AdminState, Backend, BackendId, BackendSet, BackendState};
pub use health::{Health, HealthPolicy, PanicChange, Reason, Transition};
pub use load::{InFlightGuard, Load, Outcome};
pub use retry_budget::RetryBudget;
pub use selector::{Algorithm, PickContext, Selector, SelectorConfig, UnknownAlgorithm};

/// Monotonic time in nanoseconds since an arbitrary, caller-chosen epoch.
pub type Nanos = u64;

/// One millisecond in [`Nanos`].
pub const MILLISECOND: Nanos = 1_000_000;
/// One second in [`Nanos`].
pub const SECOND: Nanos = 1_000_000_000;
