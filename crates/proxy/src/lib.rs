//! # fulcrum-proxy — the runtime
//!
//! Sockets, protocols and the request path, built around the pure
//! scheduling core in `fulcrum-balance`:
//!
//! * [`state`]: the [`Runtime`] — configuration model, the immutable
//!   [`Snapshot`] published through `ArcSwap`, and the per-backend learned
//!   state that survives reloads;
//! * [`listener`]: bound sockets, accept loops and graceful shutdown
//!   ([`Server`]); `defer_accept` wakes them only for clients that spoke;
//! * [`http`]: the L7 request path (route, pick, forward, retry, upgrade);
//! * [`routes`], [`rewrite`], [`ratelimit`], [`sticky`]: route matching,
//!   route actions, per-route rate limits, sticky sessions;
//! * [`upstream`]: per-cluster keep-alive connection pools;
//! * [`health`]: active probers, passive-health reporting and panic mode;
//! * [`metrics`]: atomic counters on the request path, Prometheus text at scrape time;
//! * [`admin`]: the admin API, reloads, and the live dashboard;
//! * [`headers`], [`body`]: header rewriting and streaming bodies;
//! * [`tcp`], [`splice`]: L4 TCP forwarding (zero-copy on Linux);
//! * [`udp`]: L4 UDP flows;
//! * [`tls`]: TLS termination with SNI certificates and reload;
//! * [`sni`], [`proxy_protocol`]: edge parsers for TLS passthrough routing
//!   and PROXY protocol headers.

pub mod access_log;
pub mod admin;
pub mod admission;
pub mod backend_tls;
pub mod body;
pub mod client_cert;
pub mod client_socket;
pub mod clock;
mod defer_accept;
pub mod geoip;
pub mod headers;
pub mod health;
pub mod http;
pub mod listener;
pub mod listener_set;
pub mod metrics;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod rewrite;
pub mod routes;
pub mod sni;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod state;
pub mod sticky;
pub mod tcp;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod udp;
pub mod upstream;

pub use listener::{ServeError, Server};
pub use state::{ClusterSnapshot, Runtime, Snapshot};
