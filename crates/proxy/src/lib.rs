//! # fulcrum-proxy — the runtime
//!
//! Sockets, protocols and the request path, built around the pure
//! scheduling core in `fulcrum-balance`:
//!
//! * [`state`]: the [`Runtime`] — configuration model, the immutable
//!   [`Snapshot`] published through `ArcSwap`, and the per-backend learned
//!   state that survives reloads;
//! * [`listener`]: bound sockets, accept loops and graceful shutdown
//!   ([`Server`]);
//! * [`http`]: the L7 request path (route, pick, forward, retry);
//! * [`upstream`]: per-cluster keep-alive connection pools;
//! * [`health`]: active probers, passive-health reporting and panic mode;
//! * [`headers`], [`body`]: header rewriting and streaming bodies.

pub mod admission;
pub mod body;
pub mod clock;
pub mod framing;
pub mod geoip;
pub mod headers;
pub mod health;
pub mod http;
pub mod listener;
pub mod routes;
pub mod state;
pub mod upstream;

pub use listener::{ServeError, Server};
pub use state::{ClusterSnapshot, Runtime, Snapshot};
