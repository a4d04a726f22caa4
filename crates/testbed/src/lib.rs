//! fulcrum-testbed: programmable backends and a load generator.
//!
//! Fulcrum's claim is that it schedules well when backends are uneven, slow,
//! saturated or failing. This crate makes such backends on demand, on real
//! sockets, so the `demo` command, end-to-end tests and benchmarks can show
//! it:
//!
//! - [`backend`]: an HTTP/1.1 + h2c server with a latency distribution, a
//!   worker capacity, failure modes (fail, flaky, black hole, reset), health
//!   toggling, body checksums and optional load reports;
//! - [`load`]: a closed- or open-loop HTTP load generator that counts answers
//!   per status and per backend and records latencies;
//! - [`mmdb`]: a minimal MaxMind DB writer, so GeoIP tests build their own
//!   database.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fulcrum_testbed::{spawn_backend, BackendOptions};
//! let mut opts = BackendOptions::new("a");
//! opts.latency = "5ms..20ms".parse().expect("valid latency");
//! let backend = spawn_backend(opts).await?;
//! println!("backend a on {}", backend.addr);
//! backend.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod backend;
pub mod load;
pub mod mmdb;

pub use backend::{
    pattern, pattern_chunk, pattern_chunks, pattern_sha256, spawn_backend, BackendOptions,
    LatencyDist, Mode, ParseError, RunningBackend,
};
pub use load::{run_load, try_run_load, Arrival, LoadError, LoadOptions, LoadReport};
